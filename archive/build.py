"""Embed a folder tree of recordings into an embedding database (perch-hoplite's format, :mod:`archive.database`).

    python -m archive.build --audio-dir ARCHIVE --db ARCHIVE_DB [--model birdnet | perch | onnx:F | checkpoint:F.pt]
                            [--hop-s S] [--workers N]

Incremental: files already in the database are not embedded again, so a rerun after new recordings arrive (or after
a kill) embeds only what is missing. Files are embedded on ``--workers`` processes (each with its own model) and
written by this process, committed every ``--commit-every`` files, less often once the vector index is large: a
commit saves the whole index, so commits are spaced to keep saving under a tenth of the time (a kill loses what
came after the last commit: ten times the last save's seconds at most, beyond ``--commit-every`` files).
Unreadable files are listed in ``<db>/unreadable.csv`` with the reason and tried again on the next run; the others
go on. Prints one JSON line: files, windows, audio hours, seconds, audio hours per hour, the database's bytes.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archive.database import ArchiveSettings, open_archive, recording_ids  # noqa: E402
from dataloader.audio import AudioError, audio_tree, shard_files  # noqa: E402
from dataloader.worker_pool import WorkerPool  # noqa: E402

log = logging.getLogger(__name__)
UNREADABLE_FILE = "unreadable.csv"
SAVE_SHARE = 0.1  # a commit saves the whole vector index: at most this share of the time goes to saving it
_WORKER: dict[str, Any] = {}


@dataclass
class BuildReport:
    """What one build run did."""

    files: int = 0  # audio files under the root
    already: int = 0  # in the database before this run
    added: int = 0
    windows: int = 0
    audio_s: float = 0.0
    seconds: float = 0.0
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, db_path: Path) -> dict[str, Any]:
        """The JSON line: counts, audio hours embedded per hour, and the database's size per audio hour."""
        size = sum(p.stat().st_size for p in Path(db_path).iterdir() if p.is_file())
        hours = self.audio_s / 3600
        out = {k: v for k, v in asdict(self).items() if k != "unreadable"}
        out.update(unreadable=len(self.unreadable), audio_hours=round(hours, 4), seconds=round(self.seconds, 2),
                   audio_hours_per_hour=round(self.audio_s / max(self.seconds, 1e-9), 1), db_bytes=size)
        return out


def _init_worker(spec: str, limit_threads: bool = True) -> None:
    from archive.window_embedders import load_window_embedder  # noqa: PLC0415

    if limit_threads:  # processes x threads <= cores
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        threadpool_limits(1)
    _WORKER["embedder"] = load_window_embedder(spec, threads=1 if limit_threads else 0)


def _task_embed(path: str, name: str, hop_s: float) -> dict[str, Any]:
    """One recording's window starts and vectors, or its error."""
    from archive.window_embedders import embed_frames  # noqa: PLC0415

    embedder = _WORKER["embedder"]
    try:
        seconds, frames = embedder.file_frames(path, hop_s)
        starts, vecs = embed_frames(embedder, frames)
    except (AudioError, OSError, RuntimeError, ValueError) as exc:
        return {"source": path, "name": name, "error": f"{type(exc).__name__}: {exc}"}
    return embedded(path, name, starts, vecs, seconds)


def embedded(path: str, name: str, starts: np.ndarray, vecs: np.ndarray, seconds: float) -> dict[str, Any]:
    """A recording's result for the database, or its error when it has no window or a non-finite vector."""
    if not len(starts):
        return {"source": path, "name": name, "error": "no audio"}
    if not np.isfinite(vecs).all():
        return {"source": path, "name": name, "error": "the model gave non-finite embeddings"}
    return {"source": path, "name": name, "starts": starts, "vectors": vecs, "seconds": seconds}


@dataclass(frozen=True)
class ArchiveWork:
    """The build's work on a Ray cluster (:func:`inference.ray_engine.run_files`): windows decoded and framed on
    CPU tasks, embedded by the model actors."""

    model: str
    hop_s: float

    def build(self) -> "EmbedderWork":
        from archive.window_embedders import load_window_embedder  # noqa: PLC0415

        return EmbedderWork(load_window_embedder(self.model, threads=1), self.hop_s)


class EmbedderWork:
    """:class:`inference.ray_engine.FileWork` of a window embedder."""

    def __init__(self, embedder: Any, hop_s: float):
        self.embedder, self.hop_s = embedder, hop_s

    def frames(self, path: Path) -> tuple[float, Iterator[tuple[np.ndarray, list[np.ndarray]]]]:
        seconds, chunks = self.embedder.file_frames(path, self.hop_s)
        return seconds, ((starts, [inputs]) for starts, inputs in chunks)

    def score(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [self.embedder.embed_inputs(inputs[0])]


def ray_results(settings: ArchiveSettings, todo: list[tuple[str, str, float]], ray: str, actors: int,
                gpus_per_actor: float) -> Iterator[dict[str, Any]]:
    """:func:`_task_embed`'s results of ``todo`` computed on the Ray cluster ``ray`` (completion order)."""
    from inference import ray_engine  # noqa: PLC0415 - Ray only when a cluster is asked for

    ray_engine.connect(ray)
    names = {path: name for path, name, _ in todo}
    work = ArchiveWork(settings.model, settings.hop_s)
    for res in ray_engine.run_files(work, [Path(p) for p, _, _ in todo], actors, gpus_per_actor,
                                    progress=f"embed ({Path(settings.model).name}, ray)"):
        path = str(res.path)
        if res.error:
            yield {"source": path, "name": names[path], "error": res.error}
        else:
            yield embedded(path, names[path], np.concatenate(res.starts), res.output(0), res.duration_s)


def archive_settings(spec: str, audio_dir: Path, hop_s: Optional[float]) -> ArchiveSettings:
    """The settings a build with model ``spec`` writes (the model loaded once here, to read its window and file)."""
    from archive.window_embedders import load_window_embedder  # noqa: PLC0415

    embedder = load_window_embedder(spec)
    return ArchiveSettings(model=embedder.spec, identity=embedder.identity, sample_rate=embedder.sample_rate,
                           window_s=embedder.window_s, hop_s=float(hop_s or embedder.window_s), dim=embedder.dim,
                           audio_root=str(Path(audio_dir).resolve()), project=Path(audio_dir).resolve().name)


def deployment_of(name: str) -> str:
    """A recording's deployment (site): its first folder under the audio root, ``.`` for the root itself."""
    parts = Path(name).parts
    return parts[0] if len(parts) > 1 else "."


def build_archive(audio_dir: str | Path, db_path: str | Path, model: str = "birdnet", hop_s: Optional[float] = None,
                  workers: int = 1, commit_every: int = 32, limit: Optional[int] = None,
                  shard: Optional[tuple[int, int]] = None, ray: Optional[str] = None, ray_actors: int = 0,
                  ray_gpus_per_actor: float = 0.0) -> BuildReport:
    """Embed every audio file under ``audio_dir`` not yet in the database at ``db_path`` (created on first use
    with ``model`` and ``hop_s``, default the model's window: no overlap); see the module docstring. ``shard``:
    (i, N), only shard i of N of the files (:func:`dataloader.audio.shard_files`); ``ray``: the files embedded on
    that Ray cluster (``auto`` or host:port) instead of ``workers`` processes."""
    t0 = time.perf_counter()
    audio_dir, db_path = Path(audio_dir).resolve(), Path(db_path)
    settings = archive_settings(model, audio_dir, hop_s)
    db = open_archive(db_path, settings)
    known = recording_ids(db)
    files = audio_tree(audio_dir)[:limit]
    if shard is not None:
        files = shard_files(files, audio_dir, *shard)
    names = [p.relative_to(audio_dir).as_posix() for p in files]
    todo = [(str(p), n, settings.hop_s) for p, n in zip(files, names) if n not in known]
    report = BuildReport(files=len(files), already=len(files) - len(todo))
    deployments = {d.name: d.id for d in db.get_all_deployments()}
    pending, saved_at, save_s = 0, time.perf_counter(), 0.0
    try:
        with contextlib.ExitStack() as stack:
            if ray:
                results = ray_results(settings, todo, ray, ray_actors, ray_gpus_per_actor)
            else:
                pool = stack.enter_context(WorkerPool(max(1, workers), _init_worker, (settings.model,)))
                results = pool.run(_task_embed, todo, desc=f"embed ({Path(settings.model).name})")
            for res in results:
                if "error" in res:
                    report.unreadable.append((res.get("name", res["source"]), res["error"]))
                    log.warning("%s: %s -- listed in %s, the others go on", res["source"], res["error"],
                                UNREADABLE_FILE)
                    continue
                site = deployment_of(res["name"])
                if site not in deployments:
                    deployments[site] = db.insert_deployment(name=site, project=settings.project)
                rec = db.insert_recording(filename=res["name"], deployment_id=deployments[site],
                                          duration_s=float(res["seconds"]))
                rows = [{"recording_id": rec, "offsets": [float(s), float(s) + settings.window_s]}
                        for s in res["starts"]]
                db.insert_windows_batch(rows, res["vectors"], handle_duplicates="allow")
                report.added += 1
                report.windows += len(rows)
                report.audio_s += res["seconds"]
                pending += 1
                if pending >= commit_every and time.perf_counter() - saved_at >= save_s / SAVE_SHARE:
                    t = time.perf_counter()
                    db.commit()
                    saved_at = time.perf_counter()
                    save_s, pending = saved_at - t, 0
    finally:
        db.commit()
        db.db.close()  # folds SQLite's write-ahead log into the file
        write_unreadable(db_path, report.unreadable)
    report.seconds = time.perf_counter() - t0
    return report


def write_unreadable(db_path: Path, unreadable: list[tuple[str, str]]) -> None:
    """``<db>/unreadable.csv`` (file, reason) of this run; removed when every file could be read."""
    path = Path(db_path) / UNREADABLE_FILE
    if not unreadable:
        path.unlink(missing_ok=True)
        return
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "reason"])
        writer.writerows(unreadable)


def main(argv: Optional[list[str]] = None) -> int:
    from utils.runtime import available_cores  # noqa: PLC0415
    from dataloader.scale_out import add_scale_arguments, shard_of  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--audio-dir", required=True, help="the archive: a folder tree of recordings")
    p.add_argument("--db", required=True, help="the database folder (created on first use)")
    p.add_argument("--model", default="birdnet",
                   help="birdnet, perch[:<file>], onnx:<file>, or checkpoint:<run>/checkpoints/best.pt")
    p.add_argument("--hop-s", type=float, default=None, help="seconds between windows (default: the model's window)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: every core)")
    p.add_argument("--commit-every", type=int, default=32, help="files per commit (what a kill can lose)")
    p.add_argument("--limit", type=int, default=None, help="only the first N files (a quick look)")
    add_scale_arguments(p, "python -m archive.merge")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    report = build_archive(args.audio_dir, args.db, args.model, args.hop_s, args.workers or available_cores(),
                           args.commit_every, args.limit, shard_of(args), args.ray, args.ray_actors,
                           args.ray_gpus_per_actor)
    print(json.dumps(report.summary(Path(args.db))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
