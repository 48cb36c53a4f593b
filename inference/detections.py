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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from inference.file_pipeline import FileRows, stream_files
from inference.predict import SoundscapePredictor
from utils.events import runs_above

log = logging.getLogger(__name__)
SCORE_COLUMNS = ["file", "start_s", "end_s", "class", "score"]
DETECTION_COLUMNS = ["file", "class", "start_s", "end_s", "max_score", "mean_score"]
RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Species", "Score"]
EVENT_OUTPUT = re.compile(r"^(?P<cls>.+)@(?P<bin>\d+)$")


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


def score_folder(predictor: SoundscapePredictor, files: Sequence[Path], hop_s: Optional[float] = None,
                 decode_threads: int = 1, root: Optional[Path] = None, progress: bool = True
                 ) -> Iterator[FileScores]:
    """:class:`FileScores` of every file, in order, read through the batched file pipeline
    (:func:`inference.file_pipeline.stream_files`: windows of the model's length every ``hop_s`` seconds, cut while
    the mel's blocks pass, decoded ahead by ``decode_threads`` threads, windows of consecutive files sharing model
    calls of ``predictor.batch_size``). A file that cannot be read yields its reason (``error``) and the rest go
    on. File names are relative to ``root`` when given."""
    check_one_front_end(predictor)
    yield from file_scores(stream_files(predictor, files, hop_s, decode_threads,
                                        progress="detect" if progress else None),
                           OutputLayout.of(predictor.labels), predictor.window_s, root)


def check_one_front_end(predictor: SoundscapePredictor) -> None:
    """Detections need one front end for every member (one window grid)."""
    if len(predictor.groups) != 1:
        raise ValueError(f"detections need ensemble members that share one front end; this ensemble has "
                         f"{len(predictor.groups)}")


def file_scores(files: Iterable[FileRows], layout: OutputLayout, window_s: float, root: Optional[Path] = None
                ) -> Iterator[FileScores]:
    """:class:`FileScores` of each recording's rows (from :func:`inference.file_pipeline.stream_files`, or the
    cluster's :func:`inference.ray_engine.stream_files`); file names relative to ``root`` when given."""
    for rows in files:
        name = str(rows.path.relative_to(root)) if root else str(rows.path)
        if rows.probs is None:
            yield FileScores(name, rows.duration_s, 0, np.zeros(0), np.zeros(0),
                             np.zeros((0, len(layout.classes)), np.float32), rows.error)
        else:
            yield slot_scores(name, rows.duration_s, rows.starts, window_s, rows.probs, layout)
