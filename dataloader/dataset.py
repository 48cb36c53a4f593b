"""torch Datasets over the feature cache: memory-mapped window crops and multi-hot targets."""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from dataloader.features import FrontEnd
from dataloader.standardize import Standardizer
from utils.tasks import get_task


def make_targets(table: pd.DataFrame, labels: Sequence[str], data: object) -> np.ndarray:
    """Recording-level targets for ``[data] task``: ``binary`` (rows, 1): 1 when ``labels[0]`` (the positive
    class) is among the row's labels; ``multiclass`` one-hot of the primary label; ``multilabel`` (and the
    clip targets of ``events``) :func:`multi_hot` with secondary labels as ``[data]`` says."""
    task = get_task(data.task)
    if task.single_output:
        extras = table["extra_labels"] if "extra_labels" in table else [[]] * len(table)
        return np.array([[float(labels[0] in (p, *e))] for p, e in zip(table["primary_label"], extras)],
                        dtype=np.float32)
    index = {label: i for i, label in enumerate(labels)}
    if task.one_label:
        y = np.zeros((len(table), len(labels)), dtype=np.float32)
        hard = [r for r, p in enumerate(table["primary_label"]) if p in index]
        y[hard, [index[table["primary_label"].iloc[r]] for r in hard]] = 1.0
    else:
        y = multi_hot(table, labels, data.secondary_label_weight, data.secondary_labels)
    if "soft_targets" in table:  # pseudo-labelled windows: the teacher's probabilities, by species name (NaN: a
        for r, soft in enumerate(table["soft_targets"]):  # class no teacher predicts, left out of the loss)
            if isinstance(soft, dict):
                y[r] = 0.0
                for label, p in soft.items():
                    if label in index:
                        y[r, index[label]] = p
    return y


def multi_hot(table: pd.DataFrame, labels: Sequence[str], secondary_weight: float, secondary_mode: str = "weight"
              ) -> np.ndarray:
    """(rows, classes) float32: 1 for the primary label (and the ``extra_labels`` of merged duplicates);
    known secondary labels get ``secondary_weight`` (``secondary_mode = "weight"``) or NaN, which the losses
    leave out (``"mask"``: present somewhere in the recording, so neither a positive nor a negative)."""
    index = {label: i for i, label in enumerate(labels)}
    y = np.zeros((len(table), len(labels)), dtype=np.float32)
    extras = table["extra_labels"] if "extra_labels" in table else [[]] * len(table)
    fill = np.nan if secondary_mode == "mask" else secondary_weight
    for r, (primary, secondary, extra) in enumerate(zip(table["primary_label"], table["secondary_labels"], extras)):
        if secondary_mode == "mask" or secondary_weight > 0:
            for s in secondary:
                if s in index:
                    y[r, index[s]] = fill
        for p in (primary, *extra):
            if p in index:
                y[r, index[p]] = 1.0
    return y


class WindowDataset(Dataset):
    """One window per row from the cache's features: a random (training, ``crop='random'``) or the first crop, or
    a fixed ``start``, cut, padded and standardised by the front end's :meth:`~dataloader.features.FrontEnd.window`
    (the code inference calls; ``per_clip`` with the recording's ``clip_stats``).

    Items are ``(window (1, rows, frames) float32, target (classes,) float32)``.
    """

    OPEN_MAPS = 4096  # memory maps kept open per process (opening one costs more than reading a crop)

    def __init__(self, entries: Sequence[str], targets: np.ndarray, frontend: FrontEnd, frames: int, crop: str,
                 pad_mode: str, standardizer: Standardizer,
                 clip_stats: Optional[Sequence[tuple[float, float]]] = None, starts: Optional[Sequence[int]] = None):
        """``starts``: a fixed first frame per item (``crop = chunks``: one item per chunk of a recording; a
        pseudo-labelled window), or -1 for the crop policy."""
        self.entries = list(entries)
        self.starts = None if starts is None else [int(s) for s in starts]
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()
        self.targets = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
        self.frontend, self.frames, self.crop, self.pad_mode, self.standardizer = (frontend, frames, crop, pad_mode,
                                                                                   standardizer)
        if standardizer.mode == "per_clip" and clip_stats is None:
            raise ValueError("per_clip standardisation needs each recording's clip_stats")
        self.clip_stats = list(clip_stats) if clip_stats is not None else None

    def __len__(self) -> int:
        return len(self.entries)

    def _mel(self, i: int) -> np.ndarray:
        """The memory-mapped mel of item ``i`` (a bounded LRU of open maps)."""
        mel = self._maps.pop(i, None)
        if mel is None:
            mel = np.load(self.entries[i], mmap_mode="r")
            if len(self._maps) >= self.OPEN_MAPS:
                self._maps.popitem(last=False)
        self._maps[i] = mel
        return mel

    def target(self, i: int, start: int) -> torch.Tensor:
        """The target of item ``i`` cropped from frame ``start`` (the recording's labels, whatever the crop)."""
        return self.targets[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        mel = self._mel(i)
        start = 0
        if self.starts is not None and self.starts[i] >= 0:  # a fixed window (chunk, pseudo-labelled window)
            start = self.starts[i]
        elif self.crop == "random" and mel.shape[1] > self.frames:
            start = int(torch.randint(0, mel.shape[1] - self.frames + 1, (1,)))
        window = self.frontend.window(mel, start, self.frames, self.standardizer,
                                      self.clip_stats[i] if self.clip_stats is not None else (), self.pad_mode)
        return torch.from_numpy(window).unsqueeze(0), self.target(i, start)


class EventWindowDataset(WindowDataset):
    """Windows with frame-level targets (seed 001): ``(classes * event_bins,)`` float32, class-major, 1 where an
    event of the class covers at least half of the time bin (or half of the event, for events shorter than a bin).
    Event-free (background) recordings give all-zero targets: negatives, not a class."""

    def __init__(self, entries: Sequence[str], events: Sequence[Sequence[tuple[float, float, str]]],
                 labels: Sequence[str], event_bins: int, frontend: FrontEnd, frames: int, crop: str,
                 pad_mode: str, standardizer: Standardizer, **kwargs: object):
        index = {label: c for c, label in enumerate(labels)}
        self.events = [[(a, b, index[lbl]) for a, b, lbl in evs if lbl in index] for evs in events]
        self.n_classes, self.bins = len(labels), event_bins
        super().__init__(entries, np.zeros((len(self.events), 0), np.float32), frontend, frames, crop, pad_mode,
                         standardizer, **kwargs)

    def target(self, i: int, start: int) -> torch.Tensor:
        fps = self.frontend.frames_per_second
        return torch.from_numpy(event_targets(self.events[i], start / fps, self.frames / fps,
                                              self.n_classes, self.bins).reshape(-1))


def event_targets(events: Sequence[tuple[float, float, int]], t0: float, duration: float, n_classes: int,
                  bins: int) -> np.ndarray:
    """(classes, bins) presence of ``events`` ((start_s, end_s, class index)) in the window [t0, t0 + duration)."""
    y = np.zeros((n_classes, bins), dtype=np.float32)
    width = duration / bins
    edges = t0 + width * np.arange(bins + 1)
    for a, b, c in events:
        overlap = np.minimum(edges[1:], b) - np.maximum(edges[:-1], a)
        y[c, overlap >= 0.5 * min(width, b - a)] = 1.0
    return y
