"""Grouped, stratified folds: a recording (group) never sits in two splits."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

log = logging.getLogger(__name__)


def filter_rare_classes(table: pd.DataFrame, min_samples_in_class: int) -> pd.DataFrame:
    """Drop recordings whose primary label has fewer than ``min_samples_in_class`` recordings."""
    counts = table.groupby("primary_label")["group"].nunique()
    keep = counts[counts >= min_samples_in_class].index
    dropped = sorted(set(counts.index) - set(keep))
    if dropped:
        log.info("min_samples_in_class=%d leaves out %d classes: %s", min_samples_in_class, len(dropped),
                 ", ".join(dropped[:20]) + (" ..." if len(dropped) > 20 else ""))
    return table[table["primary_label"].isin(keep)].reset_index(drop=True)


def assign_folds(table: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Fold number per row, stratified by ``primary_label`` and grouped by ``group``.

    Classes with fewer recordings than ``n_folds`` cannot appear in every fold; their recordings get
    fold -1 (always training), so no class is missing from training.
    """
    folds = np.full(len(table), -1, dtype=int)
    per_class = table.groupby("primary_label")["group"].transform("nunique").to_numpy()
    # a group whose label is rare anywhere stays in training as a whole
    rare_groups = set(table.loc[per_class < n_folds, "group"])
    common = ~table["group"].isin(rare_groups).to_numpy()
    idx = np.flatnonzero(common)
    if idx.size and table.loc[common, "group"].nunique() >= n_folds:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class" notes
            for k, (_, val) in enumerate(splitter.split(idx, table["primary_label"].to_numpy()[idx],
                                                        table["group"].to_numpy()[idx])):
                folds[idx[val]] = k
    return folds


def train_val_split(table: pd.DataFrame, n_folds: int, fold: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation) tables for ``fold``."""
    folds = assign_folds(table, n_folds, seed)
    return table[folds != fold].reset_index(drop=True), table[folds == fold].reset_index(drop=True)


def seeded_sample(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` recordings drawn with a seed, round-robin across classes so several classes stay represented."""
    if n >= len(table):
        return table.reset_index(drop=True)
    shuffled = table.sample(frac=1.0, random_state=seed)
    rank = shuffled.groupby("primary_label").cumcount()
    # recordings of every class at rank 0 first, then rank 1, ...; classes in a seeded order within a rank
    class_order = {c: i for i, c in enumerate(pd.unique(shuffled["primary_label"]))}
    key = rank * len(class_order) + shuffled["primary_label"].map(class_order)
    return shuffled.assign(_k=key.to_numpy()).sort_values("_k").head(n).drop(columns="_k").reset_index(drop=True)
