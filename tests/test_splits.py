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


def test_identical_audio_under_two_labels_is_merged_into_one_recording(tmp_path):
    from dataloader.dataset import multi_hot
    from dataloader.sources import merge_duplicates

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "XC1.ogg").write_bytes(b"same audio bytes")
    (tmp_path / "b" / "XC9.ogg").write_bytes(b"same audio bytes")
    (tmp_path / "b" / "XC2.ogg").write_bytes(b"other audio byte")  # same size, different content
    t = pd.DataFrame({"filename": ["b/XC9.ogg", "a/XC1.ogg", "b/XC2.ogg"], "primary_label": ["b", "a", "b"],
                      "secondary_labels": [["c"], [], []]})
    t["path"] = [str(tmp_path / f) for f in t["filename"]]
    t["group"] = [f.split("/")[1][:-4] for f in t["filename"]]
    merged, report = merge_duplicates(t)
    assert merged["filename"].tolist() == ["a/XC1.ogg", "b/XC2.ogg"]
    assert merged.loc[0, "extra_labels"] == ["b"] and merged.loc[0, "secondary_labels"] == ["c"]
    assert report["path"].tolist() == [str(tmp_path / "b/XC9.ogg")]
    assert report["reason"].iloc[0] == "duplicate, merged into a/XC1.ogg"
    assert multi_hot(merged, ["a", "b", "c"], 0.5).tolist() == [[1.0, 1.0, 0.5], [0.0, 1.0, 0.0]]
