"""One batched file pipeline for every folder of recordings: the Kaggle table (``predict_folder``) and the
detections (``score_folder``) both read their files through :func:`stream_files`.

``decode_threads`` threads take the next file, decode it once and cut its windows for every input group of the
ensemble (:func:`inference.windows.cut_windows`: while the feature blocks pass, so a long recording's mel is never
held whole), in chunks of at most ``batch_size`` windows, into a bounded queue (memory stays flat whatever the
files' lengths); the consumer joins chunks of consecutive files into model calls of ``batch_size`` windows, so a
GPU gets whole batches rather than one file's windows, and hands back each file's rows in order. Any failure while
reading a file is that file's ``error``; the others go on.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Protocol, Sequence

import numpy as np

from dataloader.audio import AudioError, MemoryReader, MonoReader, open_lenient
from inference.clock_guard import WorkClock
from inference.postprocess import RowWindows
from inference.windows import InputGroup, cut_windows, window_starts
from utils.runtime import available_cores


def default_decode_threads(device: str = "cpu") -> int:
    """Threads decoding ahead of the models: on a GPU every other core (the models wait for the CPU's decoding);
    on a CPU half the cores, at least one (the models need the others; on 2 cores one thread measured fastest)."""
    cores = available_cores()
    return max(1, cores - 1) if device == "cuda" else max(1, cores // 2)


class Ensemble(Protocol):
    """What the pipeline needs of an ensemble (:class:`inference.predict.SoundscapePredictor` is one)."""

    groups: list[InputGroup]
    window_s: float  # one row
    input_s: float  # the longest member input
    batch_size: int
    row_windows: RowWindows  # the windows each row is the mean of
    clock: WorkClock  # where the seconds of each front end's work are added

    def probabilities(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Mean probabilities of the members, ``(n, labels)``, for one window array per input group."""


@dataclass
class FileRows:
    """One recording's rows: start seconds and the ensemble's probabilities (``probs`` None when ``error``)."""

    index: int
    path: Path
    duration_s: float
    starts: np.ndarray
    probs: Optional[np.ndarray]
    error: str = ""


@dataclass
class _Chunk:
    index: int
    starts: np.ndarray
    windows: Optional[list[np.ndarray]]  # one array per input group
    last: bool = False
    duration_s: float = 0.0
    error: str = ""


@dataclass
class _Pending:
    starts: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    waiting: int = 0  # chunks of this file not scored yet
    finished: bool = False
    duration_s: float = 0.0
    error: str = ""


def file_chunks(ensemble: Ensemble, path: Path, hop_s: Optional[float] = None, max_windows: Optional[int] = None
                ) -> tuple[float, Iterator[tuple[np.ndarray, list[np.ndarray]]]]:
    """(duration in seconds, iterator of (row starts, one window array per input group)) of one recording: rows of
    ``ensemble.window_s`` every ``hop_s`` (default: end to end), the first ``max_windows`` when given (decoding
    only what they need). The file is decoded once; with several front ends the samples are kept in memory and
    each front end resamples them to its own rate."""
    row_s, around = ensemble.window_s, ensemble.row_windows
    limit = None if max_windows is None else max_windows * (hop_s or row_s) + ensemble.input_s + max(around.offsets)
    source = open_lenient(path)  # a decodable Ogg stream without a clean end is predicted from what decodes
    reader: MonoReader | MemoryReader = source
    try:
        duration = source.length(limit) / source.samplerate
        starts = around.starts(window_starts(duration, row_s, hop_s or row_s)[:max_windows])
        if len(ensemble.groups) > 1 and isinstance(source, MonoReader):
            with source:
                reader = MemoryReader(source.read(0, source.length(limit)), source.samplerate, path)
    except BaseException:
        source.close()
        raise
    return duration, _chunks(ensemble, reader, starts, limit)


def _chunks(ensemble: Ensemble, reader: MonoReader | MemoryReader, starts: np.ndarray, limit: Optional[float]
            ) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    chunk = max(1, ensemble.batch_size)
    with reader:
        if len(ensemble.groups) == 1:
            at, cut, t0 = 0, cut_windows(ensemble.groups[0], reader, starts, chunk, limit), time.perf_counter()
            for windows in cut:
                ensemble.clock.add_group(0, time.perf_counter() - t0)
                yield starts[at:at + len(windows)], [windows]
                at, t0 = at + len(windows), time.perf_counter()
            return
        per_group = []
        for g, group in enumerate(ensemble.groups):
            t0 = time.perf_counter()
            per_group.append(np.concatenate(list(cut_windows(group, reader, starts, len(starts), limit))))
            ensemble.clock.add_group(g, time.perf_counter() - t0)
    for a in range(0, len(starts), chunk):
        yield starts[a:a + chunk], [w[a:a + chunk] for w in per_group]


def failure_reason(exc: Exception) -> str:
    """Why a file could not be read, as ``unreadable.csv`` says it: an audio or OS error's own message, else the
    exception's type and message."""
    reason = str(exc) if isinstance(exc, (AudioError, OSError)) else f"{type(exc).__name__}: {exc}"
    return reason or type(exc).__name__


def file_rows(around: RowWindows, index: int, path: Path, duration_s: float, starts: Sequence[np.ndarray],
              probs: Sequence[np.ndarray], error: str = "") -> FileRows:
    """One recording's :class:`FileRows` from its scored chunks (window starts and probabilities, in order): each
    row the weighted mean of its ``around`` windows; an ``error`` makes it a file that could not be read."""
    if error:
        return FileRows(index, path, duration_s, np.zeros(0), None, error)
    row_starts = np.concatenate(starts).reshape(-1, around.count)[:, 0] - around.offsets[0]
    return FileRows(index, path, duration_s, np.round(row_starts, 6), around.combine(np.concatenate(probs)))


def stream_files(ensemble: Ensemble, files: Sequence[Path], hop_s: Optional[float] = None, decode_threads: int = 1,
                 progress: Optional[str] = None) -> Iterator[FileRows]:
    """:class:`FileRows` of every file, in order, as soon as each is complete (see the module docstring).
    ``progress``: a tqdm bar with this description. Stopping the iteration early stops the decoding threads."""
    from tqdm import tqdm  # noqa: PLC0415

    chunks: "queue.Queue[_Chunk]" = queue.Queue(maxsize=2 * decode_threads + 2)
    next_file = iter(range(len(files)))
    lock, stop = threading.Lock(), threading.Event()

    def put(item: _Chunk) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        while not stop.is_set():
            with lock:
                i = next(next_file, None)
            if i is None:
                return
            try:
                duration, parts = file_chunks(ensemble, files[i], hop_s)
                for starts, windows in parts:
                    if not put(_Chunk(i, starts, windows, duration_s=duration)):
                        return
                put(_Chunk(i, np.zeros(0), None, last=True, duration_s=duration))
            except Exception as exc:  # noqa: BLE001 - any failure is this file's; the consumer must hear of it
                put(_Chunk(i, np.zeros(0), None, last=True, error=failure_reason(exc)))

    workers = [threading.Thread(target=produce, daemon=True) for _ in range(max(1, decode_threads))]
    for w in workers:
        w.start()
    pending: dict[int, _Pending] = {}
    batch: list[_Chunk] = []
    emitted, finished_files, hours = 0, 0, 0.0
    bar = tqdm(total=len(files), desc=progress or "", unit="file", disable=progress is None)

    def score(parts: list[_Chunk]) -> None:
        groups = len(parts[0].windows)
        try:
            probs = ensemble.probabilities([np.concatenate([c.windows[g] for c in parts]) for g in range(groups)])
        except Exception as exc:  # noqa: BLE001 - a model failing on these windows fails their files, not the run
            probs, reason = None, f"the models failed on its windows: {type(exc).__name__}: {exc}"
        at = 0
        for c in parts:
            entry = pending[c.index]
            if probs is None:
                entry.error = entry.error or reason
            else:
                entry.starts.append(c.starts)
                entry.probs.append(probs[at:at + len(c.starts)])
            entry.waiting -= 1
            at += len(c.starts)

    def ready() -> Iterator[FileRows]:
        nonlocal emitted
        while emitted in pending and pending[emitted].finished and pending[emitted].waiting == 0:
            entry = pending.pop(emitted)
            yield file_rows(ensemble.row_windows, emitted, files[emitted], entry.duration_s, entry.starts,
                            entry.probs, entry.error)
            emitted += 1

    try:
        while finished_files < len(files):
            c = chunks.get()
            entry = pending.setdefault(c.index, _Pending())
            if c.last:
                entry.finished, entry.duration_s, entry.error = True, c.duration_s, c.error or entry.error
                finished_files += 1
                hours += c.duration_s / 3600
                bar.update(1)
                bar.set_postfix_str(f"{hours:.2f} h of audio")
            else:
                entry.waiting += 1
                batch.append(c)
                if sum(len(b.starts) for b in batch) >= ensemble.batch_size:
                    score(batch)
                    batch = []
            yield from ready()
        if batch:
            score(batch)
        yield from ready()
    finally:
        stop.set()
        bar.close()
        for w in workers:
            w.join()
