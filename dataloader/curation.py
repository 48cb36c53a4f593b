"""Choosing what to train on: duration outliers, class balance (downsampling or loss weights), fixed chunks."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from dataloader.audio import audio_files
from utils.config_schema import DataConfig
from utils.tasks import get_task

log = logging.getLogger(__name__)


def drop_duration_outliers(table: pd.DataFrame, low_quantile: float, high_quantile: float
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows whose ``seconds`` lie within the [low, high] quantiles of the table's durations, and the report of
    the others (``path``, ``reason``). Zero-length files never get this far (the cache skips them)."""
    if low_quantile <= 0.0 and high_quantile >= 1.0 or table.empty:
        return table, pd.DataFrame(columns=["path", "reason"])
    lo, hi = np.quantile(table["seconds"].astype(float), [low_quantile, high_quantile])
    out = (table["seconds"] < lo) | (table["seconds"] > hi)
    report = pd.DataFrame({"path": table.loc[out, "path"],
                           "reason": [f"duration outlier: {s:.2f} s outside [{lo:.2f}, {hi:.2f}] s"
                                      for s in table.loc[out, "seconds"]]})
    if out.any():
        log.info("left out %d duration outliers (outside %.2f-%.2f s, quantiles %g-%g)", int(out.sum()), lo, hi,
                 low_quantile, high_quantile)
    return table[~out].reset_index(drop=True), report


def downsample_classes(table: pd.DataFrame, seed: int, column: str = "primary_label") -> pd.DataFrame:
    """Every class down to the size of the smallest one (a seeded sample of whole rows), order kept."""
    counts = table[column].value_counts()
    smallest = int(counts.min())
    keep = (table.groupby(column, group_keys=False)
            .apply(lambda g: g.sample(n=smallest, random_state=seed), include_groups=False).index)
    log.info("balance = downsample: %d rows per class (%s)", smallest,
             ", ".join(f"{c} {n}->{smallest}" for c, n in counts.items()))
    return table.loc[table.index.isin(keep)].reset_index(drop=True)


def class_weights(targets: np.ndarray, task: str) -> list[float]:
    """Loss weights from training targets (rows, classes): for ``multiclass`` ``N / (classes * count)`` per class
    (the mean example weighs 1); otherwise each class's positives weigh ``negatives / positives`` (the
    ``pos_weight`` of a sigmoid loss), capped to 1..100. Event targets are summed over their time bins."""
    y = np.nan_to_num(np.asarray(targets, dtype=np.float64))
    if y.ndim == 3:  # (rows, classes, bins): the share of each row's bins where the class sounds
        y = y.mean(axis=2)
    positives = y.sum(axis=0)
    if get_task(task).one_label:
        weights = len(y) / (y.shape[1] * np.maximum(positives, 1.0))
    else:
        weights = np.clip((len(y) - positives) / np.maximum(positives, 1e-9), 1.0, 100.0)
    return [float(w) for w in weights]


def event_presence(table: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """(rows, classes) 1 where the row's recording has an event of the class (clip-level view of events)."""
    index = {label: c for c, label in enumerate(labels)}
    y = np.zeros((len(table), len(labels)), dtype=np.float32)
    for r, events in enumerate(table["events"]):
        for _, _, label in events:
            if label in index:
                y[r, index[label]] = 1.0
    return y


def cut_chunks(table: pd.DataFrame, window_frames: int) -> pd.DataFrame:
    """One row per consecutive ``window_frames`` chunk of each recording (column ``start``, in frames); a last
    partial chunk counts when at least half full, and a recording shorter than one window gives one chunk."""
    rows: list[int] = []
    starts: list[int] = []
    for i, frames in enumerate(table["frames"].astype(int)):
        n = max(1, frames // window_frames + (frames % window_frames >= window_frames / 2))
        rows.extend([i] * n)
        starts.extend(k * window_frames for k in range(n))
    out = table.iloc[rows].reset_index(drop=True)
    out["start"] = starts
    return out


def present_labels(table: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Sorted labels of a table: primary labels, extra (multi-label) labels and event labels (rows joined from
    elsewhere, e.g. pseudo-labelled windows beside a csv source's clips, may lack the lists: NaN)."""
    found = set(table["primary_label"])
    if "extra_labels" in table:
        found.update(x for values in table["extra_labels"] if isinstance(values, list) for x in values)
    if "events" in table:
        found.update(e[2] for events in table["events"] if isinstance(events, list) for e in events)
    return sorted(found - set(exclude))


def classes_without_examples(table: pd.DataFrame, classes: Sequence[str]) -> list[str]:
    """The classes no row of ``table`` labels at all (not as primary, extra, event or secondary label): with a
    class list from the competition, some may have no training example (BirdCLEF 2026: classes heard only in
    soundscapes whose windows all validate)."""
    found = set(present_labels(table))
    if "secondary_labels" in table:
        found.update(x for values in table["secondary_labels"] if isinstance(values, list) for x in values)
    return [c for c in classes if c not in found]


@dataclass
class RunSelection:
    """What one run trains, validates and tests on."""

    recordings: dict[str, pd.DataFrame]  # train / val / test, one row per recording (what split files hold)
    parts: dict[str, pd.DataFrame]  # the same, one row per example (per chunk with crop = chunks or events)
    labels: list[str]  # the classes (binary: [positive class])
    dropped: pd.DataFrame  # path, reason: left out as duration outliers


def run_labels(table: pd.DataFrame, data: DataConfig, classes: Optional[Sequence[str]] = None) -> list[str]:
    """The classes of ``[data] task``: binary -> ``[positive_class]`` (default: the rarer class); events -> the
    event labels without ``background_label``; otherwise the source's class list (the submission columns, with
    or without training data) when it has one, else every label present."""
    task = get_task(data.task)
    if task.single_output:
        present = present_labels(table)
        if data.positive_class:
            if data.positive_class not in present:
                raise ValueError(f"[data] positive_class = {data.positive_class}: not a label of the data; "
                                 f"allowed: {', '.join(present)}")
            return [data.positive_class]
        rarer = table["primary_label"].value_counts().sort_values(kind="stable").index[0]
        log.info("binary task: positive class %r (the rarer one; set [data] positive_class to choose)", rarer)
        return [str(rarer)]
    if task.frame_level:
        return present_labels(table, exclude=[data.background_label])
    if classes is not None:
        return list(classes)
    return present_labels(table)


def select_for_run(table: pd.DataFrame, data: DataConfig, seed: int, window_frames: int,
                   classes: Optional[Sequence[str]] = None) -> RunSelection:
    """Duration outliers out, the split (:func:`dataloader.splits.make_split`), the training cap and balance,
    the classes (``classes``: the source's list), and fixed chunks (``crop = chunks`` for every split; ``events``
    validates and tests on chunks)."""
    from dataloader.splits import cap_per_class, make_split  # noqa: PLC0415

    table, dropped = drop_duration_outliers(table, data.min_duration_quantile, data.max_duration_quantile)
    recordings = make_split(table, data, seed)
    if len(recordings["val"]) == 0:
        raise RuntimeError("the validation split is empty: too few recordings per class for the split settings")
    recordings["train"] = cap_per_class(recordings["train"], data.max_recordings_per_class, seed)
    if data.balance == "downsample":
        recordings["train"] = downsample_classes(recordings["train"], seed)
    parts = dict(recordings)
    for name, df in recordings.items():
        if data.crop == "chunks" or (get_task(data.task).frame_level and name != "train"):
            parts[name] = cut_chunks(df, window_frames)
    return RunSelection(recordings, parts, run_labels(table, data, classes), dropped)


def pseudo_label_rows(csv_path: str | Path, audio_dir: str | Path, window_s: float, min_prob: float
                      ) -> pd.DataFrame:
    """Windows of a predict.py CSV over unlabeled soundscapes as training rows: ``path`` (the soundscape),
    ``start_s`` (the window's first second), ``soft_targets`` ({species: probability}), ``primary_label`` (the
    most probable species); windows whose highest probability is below ``min_prob`` are left out."""
    table = pd.read_csv(csv_path)
    if table.columns[0] != "row_id":
        raise ValueError(f"[data] pseudo_labels = {csv_path}: the first column must be row_id (a predict.py CSV)")
    species = list(table.columns[1:])
    probs = table[species].to_numpy(dtype=np.float32)  # NaN: a class the teacher does not predict (left out)
    keep = np.nan_to_num(probs, nan=0.0).max(axis=1) >= min_prob
    stems_ends = table["row_id"].str.rsplit("_", n=1)
    by_stem = {p.stem: p for p in audio_files(audio_dir)}  # the soundscape of each row, whatever its format
    rows = pd.DataFrame({
        "path": [str(by_stem.get(stem, Path(audio_dir) / f"{stem}.ogg")) for stem, _ in stems_ends[keep]],
        "start_s": [float(end) - window_s for _, end in stems_ends[keep]],
        "primary_label": [species[j] for j in np.nan_to_num(probs[keep], nan=-1.0).argmax(axis=1)],
        "soft_targets": [dict(zip(species, p)) for p in probs[keep]],
    })
    rows["filename"] = [Path(p).name for p in rows["path"]]
    rows["group"] = [f"pseudo:{Path(p).stem}" for p in rows["path"]]
    rows["secondary_labels"] = [[] for _ in range(len(rows))]
    rows["extra_labels"] = [[] for _ in range(len(rows))]
    log.info("pseudo-labels %s: %d of %d windows kept (highest probability >= %g)", csv_path, int(keep.sum()),
             len(table), min_prob)
    return rows
