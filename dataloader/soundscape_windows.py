"""Windows cut from cached soundscapes: labelled train soundscape windows (BirdCLEF 2026) and pseudo-labelled ones.

A window is a row with the soundscape's ``path`` and its first second ``start_s``; :func:`attach_cache` turns
rows into dataset rows (``entry``, ``start`` in frames, the soundscape's clip statistics) once the soundscapes are
cached. Labelled windows are split by file: every window of one soundscape sits in one split.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from dataloader.features import FrontEnd

log = logging.getLogger(__name__)


def split_windows(windows: pd.DataFrame, mode: str, n_folds: int, fold: int, seed: int
                  ) -> dict[str, pd.DataFrame]:
    """``{"train": ..., "val": ...}`` for ``[data] soundscape_labels``: ``both`` deals the soundscape files
    (shuffled with ``seed``) over ``n_folds`` folds and validates on ``fold``; ``train`` / ``val`` put every
    window there; ``off`` uses none. A lone file trains."""
    empty = windows.iloc[:0]
    if mode == "off" or windows.empty:
        return {"train": empty, "val": empty}
    if mode in ("train", "val"):
        return {mode: windows.reset_index(drop=True), ("val" if mode == "train" else "train"): empty}
    files = np.array(sorted(windows["filename"].unique()), dtype=object)
    np.random.default_rng(seed).shuffle(files)
    val_files = set(files[fold::n_folds]) if len(files) > 1 else set()
    is_val = windows["filename"].isin(val_files)
    parts = {"train": windows[~is_val].reset_index(drop=True), "val": windows[is_val].reset_index(drop=True)}
    log.info("labelled soundscapes: %d windows of %d files train, %d windows of %d files validate",
             len(parts["train"]), parts["train"]["filename"].nunique(), len(parts["val"]), len(val_files))
    return parts


def sample_files(windows: pd.DataFrame, n_files: int, seed: int) -> pd.DataFrame:
    """The windows of ``n_files`` soundscapes drawn with ``seed`` (testing mode)."""
    files = sorted(windows["filename"].unique())
    if len(files) <= n_files:
        return windows
    keep = set(np.random.default_rng(seed).choice(files, size=n_files, replace=False))
    return windows[windows["filename"].isin(keep)].reset_index(drop=True)


def as_training_rows(windows: pd.DataFrame) -> pd.DataFrame:
    """Labelled windows as rows of the recordings' shape: the first label primary, the others ``extra_labels``
    (all positives: a soundscape label says the species calls in that window)."""
    rows = windows.copy()
    rows["primary_label"] = [labels[0] for labels in rows["labels"]]
    rows["extra_labels"] = [list(labels[1:]) for labels in rows["labels"]]
    rows["secondary_labels"] = [[] for _ in range(len(rows))]
    return rows.drop(columns=["labels"])


def attach_cache(rows: pd.DataFrame, cached: pd.DataFrame, frontend: FrontEnd) -> pd.DataFrame:
    """Rows (``path``, ``start_s``) joined with their soundscapes' cache entries; ``start`` in frames. Rows of a
    soundscape the cache skipped (unreadable) are dropped."""
    out = rows.merge(cached[["path", "entry", "frames", "seconds", "clip_mean", "clip_std"]], on="path")
    out["start"] = [frontend.frames_for(s) for s in out["start_s"]]
    return out.drop(columns=[c for c in ("start_s", "end_s") if c in out])
