"""Archive work on a Ray cluster: per-file work as Ray Data operators, or a pool of Ray tasks.

    python detect.py --checkpoint best.pt --audio-dir archive/ --out-dir det/ --ray auto   # or --ray host:6379
    python -m archive.build --audio-dir archive/ --db archive_db/ --ray auto
    python -m inference.embed --audio-dir archive/ --out emb.parquet --ray auto
    python train_classifier.py --set data.ray=auto                                        # the cache's preprocessing

:func:`run_files` spreads a :class:`FileWork` over a cluster: recordings are listed on the driver, decoded and
framed (``frames``: mel windows, raw audio windows, a foundation model's embeddings) by CPU tasks that emit each
file in chunks of at most ``chunk_windows`` windows, and scored by a pool of model actors (``score``; each builds
the work once, on a GPU when it asks for one); Ray Data's streaming executor applies back-pressure between the
stages, so the memory held is a few chunks per worker whatever the archive's size. The driver joins each file's
chunks back (:class:`FileResult`) in the order files complete (sort the tables to compare them with one machine's).
A task on a node that dies is re-run elsewhere and a dead actor is restarted, so losing a worker node loses nothing;
the callers write each file's results as it arrives, so a stopped job loses only what was in flight and a rerun
skips finished files. :class:`dataloader.ray_cluster.RayPool` runs per-file jobs without a model (the cache's
preprocessing) on the same cluster. Every node reads the recordings (and writes a cache) at the same
paths: the archive sits on storage they all mount.

``--ray auto`` joins the cluster of ``RAY_ADDRESS`` or of a ``ray start --head`` on this machine, else starts a
local one (every core of this machine); ``--ray <host:port>`` joins that cluster. Ray is imported only here.
"""
from __future__ import annotations

import io
import logging
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Protocol, Sequence

import numpy as np

from dataloader.ray_cluster import RETRIES, connect  # noqa: F401 - connect: the callers join through this module
from inference.file_pipeline import FileRows, failure_reason, file_chunks, file_rows

log = logging.getLogger(__name__)
CHUNK_WINDOWS = 64  # windows per chunk between the framing tasks and the model actors
# CPU slots (Ray's logical CPUs) of a model actor and of a framing task: on a 1-CPU node one of each runs side by
# side, as the single-machine path runs one decode thread beside the model (each process uses one thread)
ACTOR_CPUS = 0.5
FRAME_CPUS = 0.5


class FileWork(Protocol):
    """Per-file work split between CPU tasks (``frames``: decode and frame) and model actors (``score``)."""

    def frames(self, path: Path) -> tuple[float, Iterable[tuple[np.ndarray, list[np.ndarray]]]]:
        """(duration in seconds, chunks of (window starts, input arrays with one row per start))."""

    def score(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The outputs of one chunk's inputs (arrays with one row per window)."""


class WorkSpec(Protocol):
    """Plain, hashable data shipped to the cluster's workers; ``build`` makes the :class:`FileWork` there."""

    def build(self) -> FileWork:
        """The work, built on this worker (models loaded)."""


class FileWork(Protocol):
    """Per-file work split between CPU tasks (``frames``: decode and frame) and model actors (``score``)."""

    def frames(self, path: Path) -> tuple[float, Iterable[tuple[np.ndarray, list[np.ndarray]]]]:
        """(duration in seconds, chunks of (window starts, input arrays with one row per start))."""

    def score(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The outputs of one chunk's inputs (arrays with one row per window)."""


class WorkSpec(Protocol):
    """Plain, hashable data shipped to the cluster's workers; ``build`` makes the :class:`FileWork` there."""

    def build(self) -> FileWork:
        """The work, built on this worker (models loaded)."""


@dataclass(frozen=True)
class EnsembleSpec:
    """What every task and actor builds its ensemble from (plain data, shipped to the cluster's workers)."""

    checkpoints: tuple[str, ...]
    batch_size: int = 8
    backend: str = "auto"
    threads: int = 1
    precision: str = "f32"
    openvino_mode: str = "throughput"
    row_s: Optional[float] = None

    def build(self) -> Any:
        """A :class:`~inference.predict.SoundscapePredictor` of these models, on this worker's CPU."""
        from inference.predict import SoundscapePredictor  # noqa: PLC0415

        return SoundscapePredictor(list(self.checkpoints), batch_size=self.batch_size, backend=self.backend,
                                   threads=self.threads, precision=self.precision, openvino_mode=self.openvino_mode,
                                   row_s=self.row_s)


@dataclass(frozen=True)
class DetectSpec:
    """detect.py's work: an ensemble's windows every ``hop_s`` seconds, scored."""

    ensemble: EnsembleSpec
    hop_s: Optional[float] = None

    def build(self) -> "EnsembleWork":
        return EnsembleWork(worker_work(self.ensemble), self.hop_s)


class EnsembleWork:
    """:class:`FileWork` of an ensemble: its front ends' windows (:func:`inference.file_pipeline.file_chunks`),
    its probabilities."""

    def __init__(self, ensemble: Any, hop_s: Optional[float]):
        self.ensemble, self.hop_s = ensemble, hop_s

    def frames(self, path: Path) -> tuple[float, Iterable[tuple[np.ndarray, list[np.ndarray]]]]:
        return file_chunks(self.ensemble, Path(path), self.hop_s, None)

    def score(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [self.ensemble.probabilities([x.astype(np.float32, copy=False) for x in inputs])]


@lru_cache(maxsize=4)
def worker_work(spec: Any) -> Any:
    """``spec.build()``, once per worker process (Ray reuses its worker processes), on one thread per task."""
    work = spec.build()
    torch = sys.modules.get("torch")  # a work without torch (a TFLite embedder) does not pay its import
    if torch is not None:
        torch.set_num_threads(max(1, getattr(spec, "threads", 1)))  # one task per CPU slot: no oversubscription
    return work


def frame_files(batch: dict[str, np.ndarray], spec: WorkSpec, chunk_windows: int) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data operator (CPU task): each file of ``batch`` decoded and framed by the work's ``frames``, yielded
    while its blocks pass in chunks of at most ``chunk_windows`` windows (rows ``chunk`` = 0, 1, ...), then one
    closing row (``chunks`` = how many rows the file has, the closing one included; ``error`` when the file could
    not be read, possibly after some chunks)."""
    work = worker_work(spec)
    for index, path in zip(batch["index"], batch["path"]):
        k, duration, error = 0, 0.0, ""
        try:
            duration, parts = work.frames(Path(path))
            for starts, inputs in parts:
                for a in range(0, len(starts), chunk_windows):
                    yield _chunk_row(index, path, k, 0, duration, starts[a:a + chunk_windows],
                                     [x[a:a + chunk_windows] for x in inputs], "")
                    k += 1
            if k == 0:
                error = "no audio"
        except Exception as exc:  # noqa: BLE001 - any failure is this file's; the driver reports it
            error = failure_reason(exc)
        yield _chunk_row(index, path, k, k + 1, duration, np.zeros(0), None, error)


def _chunk_row(index: int, path: str, chunk: int, chunks: int, duration: float, starts: np.ndarray,
               inputs: Optional[list[np.ndarray]], error: str) -> dict[str, np.ndarray]:
    return {"index": np.array([index]), "path": np.array([str(path)]), "chunk": np.array([chunk]),
            "chunks": np.array([chunks]), "duration_s": np.array([duration]),
            "starts": np.array([_packed([np.asarray(starts, np.float64)])], dtype=object),
            "inputs": np.array([_packed(inputs)], dtype=object), "error": np.array([error])}


def _packed(arrays: Optional[Sequence[np.ndarray]]) -> bytes:
    """Arrays of any shapes (or None) as one bytes value (``.npz`` bytes; None is empty): a plain binary column,
    which Ray Data's blocks join whatever the shapes."""
    if arrays is None:
        return b""
    buffer = io.BytesIO()
    np.savez(buffer, *[np.ascontiguousarray(a) for a in arrays])
    return buffer.getvalue()


def _unpacked(value: Any) -> Optional[list[np.ndarray]]:
    """Inverse of :func:`_packed`."""
    if value is None or not len(value):
        return None
    with np.load(io.BytesIO(value), allow_pickle=False) as npz:
        return [npz[f"arr_{k}"] for k in range(len(npz.files))]


class ModelActor:
    """Ray Data operator (actor): holds the work (its models), scores each chunk's inputs."""

    def __init__(self, spec: WorkSpec):
        self.work = worker_work(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs, errors = [], []
        for packed, error in zip(batch["inputs"], batch["error"]):
            inputs, out = _unpacked(packed), None
            if inputs is not None and not error:
                try:
                    out = self.work.score(inputs)
                except Exception as exc:  # noqa: BLE001 - a model failing on these windows fails their file only
                    error = f"the models failed on its windows: {type(exc).__name__}: {exc}"
            outputs.append(_packed(out))
            errors.append(error)
        result = {k: v for k, v in batch.items() if k != "inputs"}
        result["error"], result["outputs"] = np.array(errors), np.array(outputs, dtype=object)
        return result


@dataclass
class FileResult:
    """One file's chunks as scored: window starts and outputs, chunk by chunk in order; or its error."""

    index: int
    path: Path
    duration_s: float
    starts: list[np.ndarray]
    outputs: list[list[np.ndarray]]
    error: str = ""

    def output(self, k: int = 0) -> np.ndarray:
        """Output ``k`` of every chunk, concatenated."""
        return np.concatenate([o[k] for o in self.outputs])


def run_files(spec: WorkSpec, files: Sequence[Path], actors: int = 0, gpus_per_actor: float = 0.0,
              chunk_windows: int = CHUNK_WINDOWS, progress: Optional[str] = None) -> Iterator[FileResult]:
    """:class:`FileResult` of every file, each as soon as all its chunks are scored (completion order), computed
    on the connected cluster (:func:`connect` first): framing tasks on the CPUs, ``actors`` model actors (default:
    one per CPU of the cluster; one GPU share each with ``gpus_per_actor``)."""
    import ray  # noqa: PLC0415
    import ray.data  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    if not files:
        return iter(())
    cpus = ray.cluster_resources().get("CPU", 1)
    actors = actors or max(1, int(cpus))
    if actors * ACTOR_CPUS >= cpus:  # the framing tasks need CPU slots beside the actors, or nothing moves
        raise ValueError(f"--ray-actors {actors}: {actors} model actors of {ACTOR_CPUS} CPU each leave no CPU of the "
                         f"cluster's {cpus:g} for decoding; at most {max(1, int((cpus - 0.5) / ACTOR_CPUS))}")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
    items = [{"index": i, "path": str(p)} for i, p in enumerate(files)]
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), max(1, int(4 * cpus))))
    ds = ds.map_batches(frame_files, fn_kwargs={"spec": spec, "chunk_windows": chunk_windows},
                        batch_size=1, num_cpus=FRAME_CPUS, max_retries=RETRIES)
    ds = ds.map_batches(ModelActor, fn_constructor_kwargs={"spec": spec}, batch_size=1, concurrency=actors,
                        num_cpus=ACTOR_CPUS, num_gpus=gpus_per_actor, max_restarts=RETRIES,
                        max_task_retries=RETRIES)
    return _assembled(ds, files, tqdm(total=len(files), desc=progress or "", unit="file",
                                      disable=progress is None))


def _assembled(ds: Any, files: Sequence[Path], bar: Any) -> Iterator[FileResult]:
    """Each file's :class:`FileResult` once all its chunks came back from ``ds``."""
    pending: dict[int, dict[int, dict[str, Any]]] = {}
    totals: dict[int, int] = {}
    try:
        for row in ds.iter_rows():
            index = int(row["index"])
            parts = pending.setdefault(index, {})
            parts[int(row["chunk"])] = row
            if int(row["chunks"]):
                totals[index] = int(row["chunks"])
            if len(parts) < totals.get(index, 0) or index not in totals:
                continue
            del pending[index], totals[index]
            ordered = [parts[k] for k in sorted(parts)]
            error = next((str(p["error"]) for p in ordered if p["error"]), "")
            scored = [(_unpacked(p["starts"])[0], _unpacked(p["outputs"])) for p in ordered if len(p["outputs"])]
            bar.update(1)
            yield FileResult(index, files[index], float(ordered[-1]["duration_s"]), [s for s, _ in scored],
                             [o for _, o in scored], error)
    finally:
        bar.close()


def stream_files(spec: EnsembleSpec, files: Sequence[Path], hop_s: Optional[float] = None, actors: int = 0,
                 gpus_per_actor: float = 0.0, chunk_windows: int = CHUNK_WINDOWS,
                 progress: Optional[str] = None) -> Iterator[FileRows]:
    """:func:`inference.file_pipeline.stream_files` on the cluster: :class:`FileRows` of every file, in completion
    order (see :func:`run_files`)."""
    around = worker_work(spec).row_windows  # the driver's copy: its row rule, and a missing model said here, once
    for res in run_files(DetectSpec(spec, hop_s), files, actors, gpus_per_actor, chunk_windows, progress):
        yield file_rows(around, res.index, res.path, res.duration_s, res.starts, [o[0] for o in res.outputs],
                        res.error)
