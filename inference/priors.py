"""Site and hour priors from the training soundscapes' labels (BirdCLEF 2026's ``train_soundscapes_labels.csv``):
how much more (or less) often each class is heard at a recorder site and at an hour of the day than overall.

A soundscape's name says its site and time (``BC2026_Test_0001_S02_20251112_012000.ogg``: site ``S02``, 01:20). For
each site and each ``hour_bin``-hour bin, a class's rate among the labelled windows there is shrunk towards its
overall rate (``smoothing`` windows of pseudo-count, so a site with few labelled windows says little), and each row
of a file is multiplied by ``(site rate / overall rate) ** strength x (hour rate / overall rate) ** strength``,
clipped to [0, 1]. A file whose site or hour the table never saw keeps its probabilities (a factor of 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from dataloader.sources.birdclef import parse_soundscape_name


@dataclass
class SiteHourPriors:
    """The class rate ratios per site and per hour bin (see the module docstring)."""

    classes: list[str]
    site_ratio: dict[str, np.ndarray]
    hour_ratio: dict[int, np.ndarray]
    strength: float
    hour_bin: int = 3

    @classmethod
    def from_labels(cls, labels_csv: str | Path, classes: Sequence[str], strength: float = 0.5,
                    smoothing: float = 20.0, hour_bin: int = 3) -> "SiteHourPriors":
        """Rates from ``labels_csv`` (``filename``, ``start``, ``end``, ``primary_label`` with ``;`` between
        labels; duplicate rows count once) for ``classes``."""
        table = pd.read_csv(labels_csv, dtype=str).drop_duplicates(["filename", "start", "end", "primary_label"])
        windows = table.groupby(["filename", "start", "end"])["primary_label"].apply(
            lambda s: {lbl for cell in s for lbl in str(cell).split(";") if lbl}).reset_index()
        index = {c: i for i, c in enumerate(classes)}
        hits = np.zeros((len(windows), len(classes)), dtype=np.float64)
        for r, labels in enumerate(windows["primary_label"]):
            hits[r, [index[lbl] for lbl in labels if lbl in index]] = 1.0
        overall = (hits.sum(axis=0) + 1.0) / (len(hits) + 2.0)  # never 0: a class unseen in the table
        names = [parse_soundscape_name(Path(f).name) for f in windows["filename"]]

        def ratios(keys: list) -> dict:
            out = {}
            for key in sorted({k for k in keys if k is not None}):
                mine = np.array([k == key for k in keys])
                rate = (hits[mine].sum(axis=0) + smoothing * overall) / (mine.sum() + smoothing)
                out[key] = (rate / overall).astype(np.float32)
            return out

        sites = [n["site"] or None for n in names]
        hours = [None if n["hour"] is None else n["hour"] // hour_bin for n in names]
        return cls(list(classes), ratios(sites), ratios(hours), strength, hour_bin)

    def factor(self, filename: str) -> np.ndarray:
        """The per-class multiplier of a soundscape called ``filename`` (ones when its site and hour are unknown)."""
        name = parse_soundscape_name(Path(filename).name)
        out = np.ones(len(self.classes), dtype=np.float32)
        if name["site"] in self.site_ratio:
            out *= self.site_ratio[name["site"]] ** self.strength
        if name["hour"] is not None and name["hour"] // self.hour_bin in self.hour_ratio:
            out *= self.hour_ratio[name["hour"] // self.hour_bin] ** self.strength
        return out

    def apply(self, filename: str, probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """``probs`` ``(rows, len(labels))`` of the file ``filename`` with the priors of the classes they share."""
        factor = self.factor(filename)
        index = {c: i for i, c in enumerate(self.classes)}
        per_label = np.array([factor[index[lbl]] if lbl in index else 1.0 for lbl in labels], dtype=np.float32)
        return np.clip(probs * per_label, 0.0, 1.0).astype(np.float32)
