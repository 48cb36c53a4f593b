"""Field recordings in, detections out: sliding windows with a hop, window scores, per-class thresholds, merged
detections, Raven selection tables and per-file summaries.

The mel of a recording is computed once, block by block for long files (the cache's streaming front end), and
windows of the model's length are cut from it every ``hop_s`` seconds while the blocks pass, so memory does not
grow with a recording's length or the hop. Windows of consecutive files share model calls. Works for every task:
sigmoid (multi-label, binary) and softmax (multiclass) scores per window, and for an events model (outputs
``class@bin``) the scores of each event bin, so detections have the bins' resolution.

Imports nothing from training.
"""
from __future__ import annotations

import logging
import math
import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from dataloader.audio import AUDIO_EXTENSIONS, AudioError, MonoReader
from dataloader.features import STORE_DTYPE
from inference.predict import SoundscapePredictor
from utils.events import runs_above

log = logging.getLogger(__name__)
SCORE_COLUMNS = ["file", "start_s", "end_s", "class", "score"]
DETECTION_COLUMNS = ["file", "class", "start_s", "end_s", "max_score", "mean_score"]
RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Species", "Score"]
EVENT_OUTPUT = re.compile(r"^(?P<cls>.+)@(?P<bin>\d+)$")


def audio_tree(folder: str | Path) -> list[Path]:
    """Every recording under ``folder``, any depth (OGG, WAV, FLAC, MP3, extensions in any case), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def window_starts(duration_s: float, window_s: float, hop_s: float) -> np.ndarray:
    """Start seconds of the windows of a recording: every ``hop_s`` from 0, as long as a window still starts
    inside the recording's last ``window_s`` (the last one may run past the end and is padded, as the submission's
    last row is): ``max(1, ceil((duration - 0.1 - window) / hop) + 1)`` windows, which for ``hop_s = window_s``
    are exactly the submission's rows."""
    if hop_s <= 0 or window_s <= 0:
        raise ValueError(f"hop {hop_s} s and window {window_s} s must be positive")
    count = max(1, math.ceil((duration_s - 0.1 - window_s) / hop_s - 1e-9) + 1)
    return np.round(np.arange(count) * hop_s, 6)


@dataclass
class OutputLayout:
    """How a model's outputs map to classes and time: one score per class per window, or (events) per class per
    event bin of the window."""

    classes: list[str]
    bins: int = 0  # > 0: outputs are class@bin, class-major

    @classmethod
    def of(cls, labels: Sequence[str]) -> "OutputLayout":
        """From the model's output labels (``class@bin`` for an events model)."""
        matches = [EVENT_OUTPUT.match(label) for label in labels]
        if labels and all(matches):
            classes = list(dict.fromkeys(m["cls"] for m in matches))
            bins = len(labels) // len(classes)
            if [f"{c}@{k}" for c in classes for k in range(bins)] == list(labels):
                return cls(classes, bins)
        return cls(list(labels))


@dataclass
class FileScores:
    """The scores of one recording: time slots (windows, or event bins) with their start and end seconds."""

    file: str
    duration_s: float
    windows: int
    starts: np.ndarray  # (slots,)
    ends: np.ndarray
    scores: np.ndarray  # (slots, classes)
    error: str = ""


def slot_scores(file: str, duration_s: float, starts: np.ndarray, window_s: float, probs: np.ndarray,
                layout: OutputLayout) -> FileScores:
    """Per-window probabilities ``(windows, outputs)`` to time slots: each window itself, or for an events model
    the event bins on a grid of ``window_s / bins`` seconds, where overlapping windows (hop < window) meet the
    highest score of the windows covering the bin counts."""
    if not layout.bins:
        ends = np.minimum(starts + window_s, max(duration_s, 1e-3))
        return FileScores(file, duration_s, len(starts), starts, ends, probs)
    bin_s = window_s / layout.bins
    per_bin = probs.reshape(len(starts), len(layout.classes), layout.bins)
    first = np.rint(starts / bin_s).astype(int)
    slots = int(first[-1]) + layout.bins
    grid = np.full((slots, len(layout.classes)), -np.inf, dtype=np.float32)
    for k, offset in enumerate(first):
        np.maximum(grid[offset:offset + layout.bins], per_bin[k].T, out=grid[offset:offset + layout.bins])
    keep = np.arange(slots) * bin_s < max(duration_s, bin_s)  # bins of the padding past the end are not heard
    grid = grid[keep]
    slot_starts = np.round(np.arange(len(grid)) * bin_s, 6)
    return FileScores(file, duration_s, len(starts), slot_starts,
                      np.minimum(slot_starts + bin_s, max(duration_s, 1e-3)), grid)


def merge_detections(scores: FileScores, classes: Sequence[str], thresholds: np.ndarray) -> list[dict[str, Any]]:
    """Consecutive slots of a class at or above its threshold merged into one detection (start of the first, end
    of the last, max and mean score over the run)."""
    rows = []
    for c, label in enumerate(classes):
        for a, b in runs_above(scores.scores[:, c], thresholds[c]):
            run = scores.scores[a:b, c]
            rows.append({"file": scores.file, "class": label, "start_s": float(scores.starts[a]),
                         "end_s": float(scores.ends[b - 1]), "max_score": float(run.max()),
                         "mean_score": float(run.mean())})
    return rows


def score_rows(scores: FileScores, classes: Sequence[str], min_score: float) -> pd.DataFrame:
    """The long table of one recording: every slot x class with a score at or above ``min_score``."""
    slot, cls = np.nonzero(scores.scores >= min_score)
    return pd.DataFrame({"file": scores.file, "start_s": scores.starts[slot], "end_s": scores.ends[slot],
                         "class": np.asarray(classes, dtype=object)[cls],
                         "score": scores.scores[slot, cls].round(6)}, columns=SCORE_COLUMNS)


def raven_table(detections: pd.DataFrame, low_hz: float, high_hz: float) -> pd.DataFrame:
    """Raven Pro selection table rows for the detections of one recording (selections numbered from 1, in time)."""
    d = detections.sort_values(["start_s", "class"]).reset_index(drop=True)
    return pd.DataFrame({"Selection": np.arange(1, len(d) + 1), "View": "Spectrogram 1", "Channel": 1,
                         "Begin Time (s)": d["start_s"].round(4), "End Time (s)": d["end_s"].round(4),
                         "Low Freq (Hz)": low_hz, "High Freq (Hz)": high_hz, "Species": d["class"],
                         "Score": d["max_score"].round(4)}, columns=RAVEN_COLUMNS)


def load_thresholds(path: Optional[str | Path], classes: Sequence[str], default: float) -> np.ndarray:
    """Per-class thresholds: a CSV of ``class,threshold`` (a user's tuning, or the run folder's
    ``thresholds.csv``) over ``default`` for the classes it does not list."""
    out = np.full(len(classes), default, dtype=np.float32)
    if not path:
        return out
    table = pd.read_csv(path, dtype={"class": str})
    missing = {"class", "threshold"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: needs the columns class and threshold (missing {', '.join(sorted(missing))})")
    bad = table[~table["threshold"].between(0.0, 1.0)]
    if len(bad):
        raise ValueError(f"{path}: thresholds must lie in [0, 1]; class {bad['class'].iloc[0]!r} has "
                         f"{bad['threshold'].iloc[0]}")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(table["class"]) - set(index))
    if unknown:
        log.warning("%s: %d classes the model does not predict are ignored: %s", path, len(unknown),
                    ", ".join(unknown[:10]))
    for cls, value in zip(table["class"], table["threshold"]):
        if cls in index:
            out[index[cls]] = value
    return out


@dataclass
class _Chunk:
    index: int  # the file's position
    starts: np.ndarray
    windows: Optional[np.ndarray]
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


class WindowStream:
    """The windows of a recording, ``hop_s`` apart, in chunks of at most ``chunk`` windows, cut from the mel while
    its blocks are computed (for ``per_clip`` statistics the whole mel first, which needs all of it)."""

    def __init__(self, predictor: SoundscapePredictor, hop_s: Optional[float], chunk: int):
        if len(predictor.groups) != 1:
            raise ValueError(f"detections need ensemble members that share one front end; this ensemble has "
                             f"{len(predictor.groups)}")
        self.group = predictor.groups[0]
        self.frontend = self.group.frontend
        self.window_s = self.frontend.seconds(self.group.input_frames)
        self.hop_s, self.chunk = hop_s or self.window_s, chunk  # default: windows end to end

    def __call__(self, path: Path) -> tuple[float, Iterator[tuple[np.ndarray, np.ndarray]]]:
        """(duration in seconds, iterator of (starts, windows (n, 1, rows, frames) float32))."""
        reader = MonoReader(path)
        try:
            duration = reader.length() / reader.samplerate
        except AudioError:
            reader.close()
            raise
        return duration, self._chunks(reader, duration)

    def _chunks(self, reader: MonoReader, duration: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        g, fe = self.group, self.frontend
        starts = window_starts(duration, self.window_s, self.hop_s)
        first_frames = np.rint(starts * fe.frames_per_second).astype(int)
        frames = g.input_frames
        with reader:
            if g.standardizer.mode == "per_clip":
                features, _ = fe.features_from(reader)
                blocks: Iterator[np.ndarray] = iter([features])
                clip = g.standardizer.clip_stats(features)
            else:
                _, raw = fe.feature_blocks(reader)
                blocks = (block.astype(STORE_DTYPE) for block in raw)  # what the cache stores and training saw
                clip = ()
            buffer = np.zeros((fe.rows, 0), dtype=STORE_DTYPE)
            offset, exhausted = 0, False  # offset: the file frame of buffer[:, 0]
            out: list[np.ndarray] = []
            at = 0
            for k, start in enumerate(first_frames):
                while not exhausted and offset + buffer.shape[1] < start + frames:
                    block = next(blocks, None)
                    if block is None:
                        exhausted = True
                    else:
                        buffer = np.concatenate([buffer, block], axis=1)
                out.append(fe.window(buffer, start - offset, frames, g.standardizer, clip, g.pad_mode))
                if len(out) == self.chunk or k == len(first_frames) - 1:
                    yield starts[at:k + 1], np.stack(out)[:, None]
                    out, at = [], k + 1
                if k + 1 < len(first_frames):  # frames before the next window are no longer needed
                    drop = min(int(first_frames[k + 1]) - offset, buffer.shape[1])
                    buffer, offset = buffer[:, drop:], offset + drop


def score_folder(predictor: SoundscapePredictor, files: Sequence[Path], hop_s: Optional[float] = None,
                 decode_threads: int = 1, root: Optional[Path] = None, progress: bool = True
                 ) -> Iterator[FileScores]:
    """:class:`FileScores` of every file, in order. ``decode_threads`` threads decode and cut windows ahead (at
    most a few chunks wait, so memory stays bounded); windows of consecutive files share model calls of
    ``predictor.batch_size``. A file that cannot be read yields its reason (``error``) and the rest go on. File
    names are relative to ``root`` when given."""
    from tqdm import tqdm  # noqa: PLC0415

    stream = WindowStream(predictor, hop_s, predictor.batch_size)
    layout = OutputLayout.of(predictor.labels)
    names = [str(p.relative_to(root)) if root else str(p) for p in files]
    chunks: "queue.Queue[_Chunk]" = queue.Queue(maxsize=2 * decode_threads + 2)
    next_file = iter(range(len(files)))
    lock = threading.Lock()

    def produce() -> None:
        while True:
            with lock:
                i = next(next_file, None)
            if i is None:
                return
            try:
                duration, parts = stream(files[i])
                for starts, windows in parts:
                    chunks.put(_Chunk(i, starts, windows, duration_s=duration))
                chunks.put(_Chunk(i, np.zeros(0), None, last=True, duration_s=duration))
            except Exception as exc:  # noqa: BLE001 - any failure is this file's; the consumer must hear of it
                reason = str(exc) if isinstance(exc, (AudioError, OSError)) else f"{type(exc).__name__}: {exc}"
                chunks.put(_Chunk(i, np.zeros(0), None, last=True, error=reason or type(exc).__name__))

    workers = [threading.Thread(target=produce, daemon=True) for _ in range(max(1, decode_threads))]
    for w in workers:
        w.start()
    pending: dict[int, _Pending] = {}
    batch: list[_Chunk] = []
    emitted, finished_files = 0, 0
    bar = tqdm(total=len(files), desc="detect", unit="file", disable=not progress)
    hours = 0.0

    def score(parts: list[_Chunk]) -> None:
        probs = predictor.predict_windows(np.concatenate([c.windows for c in parts]))
        at = 0
        for c in parts:
            entry = pending[c.index]
            entry.starts.append(c.starts)
            entry.probs.append(probs[at:at + len(c.starts)])
            entry.waiting -= 1
            at += len(c.starts)

    def ready() -> Iterator[FileScores]:
        nonlocal emitted
        while emitted in pending and pending[emitted].finished and pending[emitted].waiting == 0:
            entry = pending.pop(emitted)
            if entry.error:
                yield FileScores(names[emitted], entry.duration_s, 0, np.zeros(0), np.zeros(0),
                                 np.zeros((0, len(layout.classes)), np.float32), entry.error)
            else:
                yield slot_scores(names[emitted], entry.duration_s, np.concatenate(entry.starts), stream.window_s,
                                  np.concatenate(entry.probs), layout)
            emitted += 1

    while finished_files < len(files):
        c = chunks.get()
        entry = pending.setdefault(c.index, _Pending())
        if c.last:
            entry.finished, entry.duration_s, entry.error = True, c.duration_s, c.error
            finished_files += 1
            hours += c.duration_s / 3600
            bar.update(1)
            bar.set_postfix_str(f"{hours:.2f} h of audio")
        else:
            entry.waiting += 1
            batch.append(c)
            if sum(len(b.starts) for b in batch) >= predictor.batch_size:
                score(batch)
                batch = []
        yield from ready()
    if batch:
        score(batch)
    yield from ready()
    bar.close()
    for w in workers:
        w.join()
