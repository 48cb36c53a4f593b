"""Grouped, stratified folds and train/val/test holdouts: a recording (group) never sits in two splits."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from utils.config_schema import DataConfig

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


def _shuffled_groups_per_class(table: pd.DataFrame, rng: np.random.Generator) -> Iterator[list[str]]:
    """Each primary label's groups (recordings), shuffled with ``rng``, class by class in sorted order (lazily:
    the caller's own draws between classes keep their place in the random sequence)."""
    label_of_group = table.groupby("group", sort=True)["primary_label"].first()
    for _, members in label_of_group.groupby(label_of_group, sort=True):
        groups = list(members.index)
        rng.shuffle(groups)
        yield groups


def assign_folds(table: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Fold number per row, stratified by ``primary_label`` and grouped by ``group``.

    Each class's recordings (groups) are shuffled with ``seed`` and dealt round-robin over the folds from a
    random starting fold, so every class is spread as evenly as its size allows and fold sizes stay balanced,
    for any class size (scikit-learn's StratifiedGroupKFold refuses data whose classes are all smaller than
    ``n_folds``, as in testing mode). A class with a single recording cannot be both trained on and
    validated: that recording gets fold -1 (always training).
    """
    rng = np.random.default_rng(seed)
    fold_of_group: dict[str, int] = {}
    for groups in _shuffled_groups_per_class(table, rng):
        if len(groups) < 2:
            fold_of_group[groups[0]] = -1
            continue
        start = int(rng.integers(n_folds))
        for i, group in enumerate(groups):
            fold_of_group[group] = (start + i) % n_folds
    return table["group"].map(fold_of_group).to_numpy(dtype=int)


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


def cap_per_class(table: pd.DataFrame, max_per_class: int, seed: int) -> pd.DataFrame:
    """At most ``max_per_class`` rows per primary label, a seeded sample (0 = no cap); order kept."""
    if max_per_class <= 0:
        return table
    keep = (table.groupby("primary_label", group_keys=False)
            .apply(lambda g: g.sample(n=min(len(g), max_per_class), random_state=seed), include_groups=False)
            .index)
    return table.loc[table.index.isin(keep)]


def holdout_assign(table: pd.DataFrame, train_ratio: float, test_val_ratio: float, seed: int) -> np.ndarray:
    """``train`` / ``val`` / ``test`` per row, stratified by ``primary_label`` and grouped by ``group``: each
    class's groups are shuffled with ``seed`` and cut by the ratios (``test_val_ratio`` of what is not training
    goes to test). A class with a single group trains; with two, one trains and one validates."""
    split_of_group: dict[str, str] = {}
    for groups in _shuffled_groups_per_class(table, np.random.default_rng(seed)):
        n = len(groups)
        n_train = min(n - 1, max(1, int(round(n * train_ratio)))) if n > 1 else 1
        n_test = int(round((n - n_train) * test_val_ratio))
        if n - n_train - n_test < 1 and n - n_train >= 1:
            n_test = n - n_train - 1  # keep at least one validation group
        for i, group in enumerate(groups):
            split_of_group[group] = "train" if i < n_train else ("test" if i < n_train + n_test else "val")
    return table["group"].map(split_of_group).to_numpy(dtype=object)


def make_split(table: pd.DataFrame, data: DataConfig, seed: int) -> dict[str, pd.DataFrame]:
    """{train, val, test} tables from the ``[data]`` section: a CSV ``split`` column when present, else
    ``split = holdout`` (ratios) or ``kfold`` (``fold`` validates, no test: the csv's own ``fold`` column when it
    has one, else ``n_folds`` grouped, stratified folds)."""
    if "split" in table and (table["split"] != "").all():
        assigned = table["split"].to_numpy(dtype=object)
        source = "the csv's split column"
    elif "fold" in table and data.split == "kfold":  # the csv's own folds
        folds = table["fold"].to_numpy()
        if data.fold not in set(folds.tolist()):
            raise ValueError(f"[data] fold = {data.fold}: the csv's fold column has {sorted(set(folds.tolist()))}")
        assigned = np.where(folds == data.fold, "val", "train").astype(object)
        source = f"the csv's fold {data.fold} of {sorted(set(folds.tolist()))}"
    elif data.split == "holdout":
        assigned = holdout_assign(table, data.train_ratio, data.test_val_ratio, seed)
        source = f"holdout {data.train_ratio:g} train, rest {1 - data.test_val_ratio:g} val / {data.test_val_ratio:g} test"
    else:
        folds = assign_folds(table, data.n_folds, seed)
        assigned = np.where(folds == data.fold, "val", "train").astype(object)
        source = f"fold {data.fold} of {data.n_folds}"
    parts = {name: table[assigned == name].reset_index(drop=True) for name in ("train", "val", "test")}
    log.info("split (%s): %s", source, ", ".join(f"{len(df)} {name}" for name, df in parts.items()))
    return parts


def split_counts(parts: dict[str, pd.DataFrame]) -> dict[str, dict[str, int]]:
    """Per split, recordings per primary label (what seed 004's metadata JSON held)."""
    return {name: {str(k): int(v) for k, v in df["primary_label"].value_counts().sort_index().items()}
            for name, df in parts.items()}


def write_split(folder: str | Path, parts: dict[str, pd.DataFrame]) -> Path:
    """``train.csv``, ``val.csv``, ``test.csv`` (path, filename, primary_label, labels, group) and
    ``split_counts.json`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in parts.items():
        labels = [";".join([p, *extra]) for p, extra in
                  zip(df["primary_label"], df["extra_labels"] if "extra_labels" in df else [[]] * len(df))]
        pd.DataFrame({"path": df["path"], "filename": df["filename"], "primary_label": df["primary_label"],
                      "labels": labels, "group": df["group"]}).to_csv(folder / f"{name}.csv", index=False)
    (folder / "split_counts.json").write_text(json.dumps(split_counts(parts), indent=1))
    return folder


def split_key(data: DataConfig, data_dir: str | Path, seed: int, testing: bool = False) -> str:
    """Names a run's split files in the cache folder: the data source and every setting that changes the split."""
    import hashlib  # noqa: PLC0415

    text = json.dumps([data.source, data.edition, data.demo_edition, data.min_rating, data.soundscape_labels,
                       str(Path(data_dir).resolve()), data.labels_csv, data.task, data.split,
                       data.n_folds, data.fold, data.train_ratio, data.test_val_ratio, data.min_samples_in_class,
                       data.min_duration_quantile, data.max_duration_quantile, seed, testing])
    return f"{data.source}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"
