"""Archive work on a Ray cluster: the file pipeline's stages as Ray Data operators.

    python detect.py --checkpoint best.pt --audio-dir archive/ --out-dir det/ --ray auto   # or --ray host:6379

:func:`stream_files` is :func:`inference.file_pipeline.stream_files` spread over a cluster: recordings are listed
on the driver, decoded and framed (the ensemble's front end: mel windows, or a foundation model's embeddings) by
CPU tasks that emit each file in chunks of at most ``chunk_windows`` windows, and scored by a pool of model actors
(each loads the ensemble once, on a GPU when it asks for one); Ray Data's streaming executor applies back-pressure
between the stages, so the memory held is a few chunks per worker whatever the archive's size. The driver joins
each file's chunks back into the same :class:`~inference.file_pipeline.FileRows` as the single-machine path, in
the order files complete (sort the tables to compare them). A task on a node that dies is re-run elsewhere and a
dead actor is restarted, so losing a worker node loses nothing; the callers write each file's results as it
arrives, so a stopped job loses only what was in flight and a rerun skips finished files.

``--ray auto`` joins the cluster of ``RAY_ADDRESS`` or of a ``ray start --head`` on this machine, else starts a
local one (every core of this machine); ``--ray <host:port>`` joins that cluster. Ray is imported only here.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from inference.file_pipeline import FileRows, failure_reason, file_chunks, file_rows

log = logging.getLogger(__name__)
CHUNK_WINDOWS = 64  # windows per chunk between the framing tasks and the model actors
# CPU slots (Ray's logical CPUs) of a model actor and of a framing task: on a 1-CPU node one of each runs side by
# side, as the single-machine path runs one decode thread beside the model (each process uses one thread)
ACTOR_CPUS = 0.5
FRAME_CPUS = 0.5
# a task re-run / an actor restarted after its worker or node died; bounded, so that a recording that crashes its
# decoder (a segfault is a worker's death, not an exception) cannot be retried forever
RETRIES = 20


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


@lru_cache(maxsize=2)
def worker_ensemble(spec: EnsembleSpec) -> Any:
    """The ensemble of ``spec``, built once per worker process (Ray reuses its worker processes)."""
    import torch  # noqa: PLC0415

    torch.set_num_threads(max(1, spec.threads))  # one task per CPU slot: no oversubscription
    return spec.build()


def connect(address: str, num_cpus: Optional[int] = None) -> dict[str, float]:
    """Join the cluster ``address`` (``auto``: ``RAY_ADDRESS`` or a cluster started on this machine, else a new
    local one with ``num_cpus``); returns the cluster's resources."""
    import ray  # noqa: PLC0415

    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "include_dashboard": False}
        if address == "auto" and not os.environ.get("RAY_ADDRESS"):
            try:
                ray.init(address="auto", **quiet)
            except ConnectionError:
                log.info("ray: no running cluster found; starting a local one")
                ray.init(num_cpus=num_cpus, **quiet)
        else:
            ray.init(address=None if address == "auto" else address, **quiet)
    resources = ray.cluster_resources()
    log.info("ray: %d node(s), %g CPUs, %g GPUs", len([n for n in ray.nodes() if n.get("Alive")]),
             resources.get("CPU", 0), resources.get("GPU", 0))
    return resources


def frame_files(batch: dict[str, np.ndarray], spec: EnsembleSpec, hop_s: Optional[float],
                chunk_windows: int) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data operator (CPU task): each file of ``batch`` decoded and framed by the ensemble's front end, yielded
    while its blocks pass in chunks of at most ``chunk_windows`` windows (rows ``chunk`` = 0, 1, ...), then one
    closing row (``chunks`` = how many rows the file has, the closing one included; ``error`` when the file could
    not be read, possibly after some chunks)."""
    ensemble = worker_ensemble(spec)
    for index, path in zip(batch["index"], batch["path"]):
        k, duration, error = 0, 0.0, ""
        try:
            duration, parts = file_chunks(ensemble, Path(path), hop_s, None)
            for starts, windows in parts:
                for a in range(0, len(starts), chunk_windows):
                    yield _chunk_row(index, path, k, 0, duration, starts[a:a + chunk_windows],
                                     windows[0][a:a + chunk_windows], "")
                    k += 1
            if k == 0:
                error = "no windows"
        except Exception as exc:  # noqa: BLE001 - any failure is this file's; the driver reports it
            error = failure_reason(exc)
        yield _chunk_row(index, path, k, k + 1, duration, np.zeros(0), None, error)


def _chunk_row(index: int, path: str, chunk: int, chunks: int, duration: float, starts: np.ndarray,
               windows: Optional[np.ndarray], error: str) -> dict[str, np.ndarray]:
    return {"index": np.array([index]), "path": np.array([str(path)]), "chunk": np.array([chunk]),
            "chunks": np.array([chunks]), "duration_s": np.array([duration]),
            "starts": _packed([np.asarray(starts, np.float64)]), "windows": _packed([windows]),
            "error": np.array([error])}


def _packed(arrays: Sequence[Optional[np.ndarray]]) -> np.ndarray:
    """Arrays of any shape (or None) as one bytes value per row (``.npy`` bytes; None is empty): a plain binary
    column, which Ray Data's blocks join whatever the shapes."""
    out = []
    for array in arrays:
        if array is None:
            out.append(b"")
            continue
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        out.append(buffer.getvalue())
    return np.array(out, dtype=object)


def _unpacked(value: Any) -> Optional[np.ndarray]:
    """Inverse of :func:`_packed` for one row."""
    return np.load(io.BytesIO(value), allow_pickle=False) if value is not None and len(value) else None


class ModelActor:
    """Ray Data operator (actor): holds the ensemble, scores each chunk's windows."""

    def __init__(self, spec: EnsembleSpec):
        self.ensemble = worker_ensemble(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probs, errors = [], []
        for packed, error in zip(batch["windows"], batch["error"]):
            windows, p = _unpacked(packed), None
            if windows is not None and not error:
                try:
                    p = self.ensemble.probabilities([windows.astype(np.float32, copy=False)])
                except Exception as exc:  # noqa: BLE001 - a model failing on these windows fails their file only
                    error = f"the models failed on its windows: {type(exc).__name__}: {exc}"
            probs.append(p)
            errors.append(error)
        out = {k: v for k, v in batch.items() if k != "windows"}
        out["error"], out["probs"] = np.array(errors), _packed(probs)
        return out


def stream_files(spec: EnsembleSpec, files: Sequence[Path], hop_s: Optional[float] = None, actors: int = 0,
                 gpus_per_actor: float = 0.0, chunk_windows: int = CHUNK_WINDOWS,
                 progress: Optional[str] = None) -> Iterator[FileRows]:
    """:class:`FileRows` of every file, each as soon as all its chunks are scored (completion order), computed on
    the connected cluster (:func:`connect` first): framing tasks on the CPUs, ``actors`` model actors (default: the
    cluster's CPUs / 2, at least 1; one GPU share each with ``gpus_per_actor``)."""
    import ray  # noqa: PLC0415
    import ray.data  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    if not files:
        return iter(())
    ensemble = worker_ensemble(spec)  # the driver's copy: its row rule, and a missing model said here, once
    around = ensemble.row_windows
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
    ds = ds.map_batches(frame_files, fn_kwargs={"spec": spec, "hop_s": hop_s, "chunk_windows": chunk_windows},
                        batch_size=1, num_cpus=FRAME_CPUS, max_retries=RETRIES)
    ds = ds.map_batches(ModelActor, fn_constructor_kwargs={"spec": spec}, batch_size=1, concurrency=actors,
                        num_cpus=ACTOR_CPUS, num_gpus=gpus_per_actor, max_restarts=RETRIES,
                        max_task_retries=RETRIES)
    return _assembled(ds, files, around, tqdm(total=len(files), desc=progress or "", unit="file",
                                              disable=progress is None))


def _assembled(ds: Any, files: Sequence[Path], around: Any, bar: Any) -> Iterator[FileRows]:
    """Each file's :class:`FileRows` once all its chunks came back from ``ds``."""
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
            scored = [(_unpacked(p["starts"]), _unpacked(p["probs"])) for p in ordered if len(p["probs"])]
            bar.update(1)
            yield file_rows(around, index, files[index], float(ordered[-1]["duration_s"]),
                            [s for s, _ in scored], [q for _, q in scored], error)
    finally:
        bar.close()
