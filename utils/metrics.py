"""The BirdCLEF 2024 competition metric, exactly as Kaggle scores it."""
from __future__ import annotations

import pandas as pd
from sklearn.metrics import roc_auc_score


class ScoringError(ValueError):
    """The submission cannot be scored (as Kaggle's ParticipantVisibleError)."""


def competition_score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str) -> float:
    """Macro ROC-AUC over the species columns with at least one positive in ``solution``.

    Columns without a positive are skipped (not scored as 0.5).  A non-numeric submission column raises
    :class:`ScoringError`; NaN raises (as scikit-learn does on Kaggle).  Rows are matched by row id; the
    inputs are not modified.
    """
    solution = solution.set_index(row_id_column_name)
    submission = submission.set_index(row_id_column_name)
    bad = {c: str(submission[c].dtype) for c in submission.columns if not pd.api.types.is_numeric_dtype(submission[c])}
    if bad:
        raise ScoringError(f"Invalid submission data types found: {bad}")
    missing_rows = solution.index.difference(submission.index)
    if len(missing_rows):
        raise ScoringError(f"submission lacks {len(missing_rows)} row ids, e.g. {list(missing_rows[:3])}")
    missing_cols = [c for c in solution.columns if c not in submission.columns]
    if missing_cols:
        raise ScoringError(f"submission lacks species columns {missing_cols[:5]}")
    submission = submission.loc[solution.index, solution.columns]
    sums = solution.sum(axis=0)
    scored = list(sums[sums > 0].index)
    if not scored:
        raise ScoringError("no species column of the solution has a positive")
    try:
        return float(roc_auc_score(solution[scored].to_numpy(), submission[scored].to_numpy(), average="macro"))
    except ValueError as exc:  # NaN / inf in the submission
        raise ScoringError(str(exc)) from exc
