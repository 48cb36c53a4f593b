"""competition_score: Kaggle's BirdCLEF 2024 metric on hand-computed cases."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from utils.metrics import ScoringError, competition_score


def frames(sol: dict, sub: dict):
    ids = [f"s_{5 * (i + 1)}" for i in range(len(next(iter(sol.values()))))]
    return pd.DataFrame({"row_id": ids, **sol}), pd.DataFrame({"row_id": ids, **sub})


def test_perfect_and_reversed_rankings():
    sol, sub = frames({"a": [1, 0, 0, 1]}, {"a": [0.9, 0.1, 0.2, 0.8]})
    assert competition_score(sol, sub, "row_id") == 1.0
    sol, sub = frames({"a": [1, 0, 0, 1]}, {"a": [0.1, 0.9, 0.8, 0.2]})
    assert competition_score(sol, sub, "row_id") == 0.0


def test_hand_computed_macro_average():
    # class a: positives {0.8, 0.4}, negatives {0.6, 0.2}: pairs won 3 of 4 -> 0.75
    # class b: positive {0.3}, negatives {0.5, 0.1, 0.7}: pairs won 1 of 3 -> 1/3
    sol, sub = frames({"a": [1, 0, 1, 0], "b": [0, 1, 0, 0]}, {"a": [0.8, 0.6, 0.4, 0.2], "b": [0.5, 0.3, 0.1, 0.7]})
    assert competition_score(sol, sub, "row_id") == pytest.approx((0.75 + 1 / 3) / 2)


def test_a_class_without_positive_is_skipped_not_scored_half():
    sol, sub = frames({"a": [1, 0, 0], "z": [0, 0, 0]}, {"a": [0.9, 0.1, 0.2], "z": [0.5, 0.9, 0.1]})
    assert competition_score(sol, sub, "row_id") == 1.0


def test_ties_count_half():
    sol, sub = frames({"a": [1, 0]}, {"a": [0.5, 0.5]})
    assert competition_score(sol, sub, "row_id") == 0.5


def test_rows_are_matched_by_row_id_and_inputs_untouched():
    sol, sub = frames({"a": [1, 0, 0]}, {"a": [0.9, 0.1, 0.2]})
    shuffled = sub.iloc[[2, 0, 1]].reset_index(drop=True)
    before = shuffled.copy()
    assert competition_score(sol, shuffled, "row_id") == 1.0
    pd.testing.assert_frame_equal(shuffled, before)


def test_text_column_raises():
    sol, sub = frames({"a": [1, 0]}, {"a": ["high", "low"]})
    with pytest.raises(ScoringError, match="Invalid submission data types"):
        competition_score(sol, sub, "row_id")


def test_nan_raises():
    sol, sub = frames({"a": [1, 0]}, {"a": [np.nan, 0.2]})
    with pytest.raises(ScoringError):
        competition_score(sol, sub, "row_id")


def test_missing_rows_raise():
    sol, sub = frames({"a": [1, 0, 0]}, {"a": [0.9, 0.1, 0.2]})
    with pytest.raises(ScoringError, match="row ids"):
        competition_score(sol, sub.iloc[:2], "row_id")


def test_cmap_and_padded_cmap_match_the_earlier_birdclef_definitions():
    from sklearn.metrics import average_precision_score

    from utils.metrics import cmap_score, padded_cmap_score, per_class_table

    sol = pd.DataFrame({"row_id": ["a", "b", "c", "d"], "s1": [1, 0, 0, 1], "s2": [0, 1, 0, 0], "s3": [0, 0, 0, 0]})
    sub = pd.DataFrame({"row_id": ["d", "c", "b", "a"], "s1": [0.9, 0.2, 0.3, 0.6], "s2": [0.1, 0.5, 0.4, 0.2],
                        "s3": [0.3, 0.2, 0.1, 0.9]})
    aligned = sub.set_index("row_id").loc[sol["row_id"]]
    expected = np.mean([average_precision_score(sol[c], aligned[c]) for c in ("s1", "s2")])  # s3: no positive
    assert cmap_score(sol, sub, "row_id") == pytest.approx(expected)
    ones = pd.DataFrame([[1, 1, 1]] * 5, columns=["s1", "s2", "s3"])  # the 2023 notebook's padding, verbatim
    padded = average_precision_score(pd.concat([sol[["s1", "s2", "s3"]], ones]).to_numpy(),
                                     pd.concat([aligned.reset_index(drop=True), ones]).to_numpy(), average="macro")
    assert padded_cmap_score(sol, sub, "row_id") == pytest.approx(padded)
    table = per_class_table(sol[["s1", "s2", "s3"]].to_numpy(), aligned.to_numpy(), ["s1", "s2", "s3"])
    assert table["positives"].tolist() == [2, 1, 0] and np.isnan(table.loc[2, "roc_auc"])
    assert table.loc[0, "average_precision"] == pytest.approx(average_precision_score(sol["s1"], aligned["s1"]))
