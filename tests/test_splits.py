"""Grouped, stratified folds and the testing-mode sample."""
from __future__ import annotations

import pandas as pd

from dataloader.splits import assign_folds, filter_rare_classes, seeded_sample, train_val_split


def table(n_classes: int = 6, per_class: int = 12) -> pd.DataFrame:
    rows = []
    for c in range(n_classes):
        for r in range(per_class):
            # two rows share a group (the same audio listed twice)
            rows.append({"primary_label": f"c{c}", "group": f"g{c}_{r // 2}", "path": f"{c}_{r}"})
    rows.append({"primary_label": "rare", "group": "rare0", "path": "rare0"})
    return pd.DataFrame(rows)


def test_a_recording_never_sits_in_two_splits():
    t = table()
    for fold in range(5):
        train, val = train_val_split(t, 5, fold, seed=1)
        assert not set(train["group"]) & set(val["group"])
        assert len(train) + len(val) == len(t)


def test_folds_are_stratified_seeded_and_rare_classes_stay_in_training():
    t = table()
    folds = assign_folds(t, 5, seed=1)
    assert (folds == assign_folds(t, 5, seed=1)).all()
    assert (folds != assign_folds(t, 5, seed=2)).any()
    assert folds[t["primary_label"] == "rare"].tolist() == [-1]
    _, val = train_val_split(t, 5, 0, seed=1)
    assert val["primary_label"].nunique() == 6


def test_min_samples_in_class_drops_small_classes():
    t = table()
    assert "rare" in set(filter_rare_classes(t, 1)["primary_label"])
    assert "rare" not in set(filter_rare_classes(t, 2)["primary_label"])


def test_testing_sample_is_seeded_and_keeps_several_classes():
    t = table()
    s = seeded_sample(t, 14, seed=3)
    assert len(s) == 14 and s["primary_label"].nunique() == 7
    assert s["path"].tolist() == seeded_sample(t, 14, seed=3)["path"].tolist()
    assert s["path"].tolist() != t["path"].head(14).tolist()


def test_classes_are_spread_evenly_over_folds_even_when_tiny():
    t = table(n_classes=4, per_class=20)  # 10 groups per class
    folds = assign_folds(t, 5, seed=0)
    per_fold = pd.crosstab(t["primary_label"], folds)
    assert set(per_fold.columns) == {-1, 0, 1, 2, 3, 4}
    assert (per_fold.drop(index="rare", columns=-1).to_numpy() == 4).all()  # 2 groups x 2 rows per fold
    tiny = table(n_classes=3, per_class=4)  # 2 groups per class, fewer than folds
    _, val = train_val_split(tiny, 5, 0, seed=0)
    train, _ = train_val_split(tiny, 5, 0, seed=0)
    assert set(train["primary_label"]) >= {"c0", "c1", "c2"}
