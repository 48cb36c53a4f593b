"""Kaggle submission tables: row ids, species columns mapped by name, validation before writing."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from dataloader.features import n_windows  # noqa: F401 - the submission's row count is the front end's rule
from utils.atomic_files import atomic_path


class SubmissionError(ValueError):
    """The submission would be rejected or mis-scored by Kaggle."""


def row_id(stem: str, index: int, window_s: float = 5.0) -> str:
    """``<stem>_<end second>`` of window ``index`` (0-based) of a soundscape."""
    return f"{stem}_{int(round((index + 1) * window_s))}"


def row_ids(stem: str, count: int, window_s: float = 5.0) -> list[str]:
    """``<stem>_<end second>`` for ``count`` windows."""
    return [row_id(stem, k, window_s) for k in range(count)]


def to_submission_frame(ids: Sequence[str], probs: np.ndarray, model_labels: Sequence[str],
                        columns: Sequence[str]) -> pd.DataFrame:
    """One row per id, one column per species of ``columns`` (sample_submission order).

    Model classes are mapped by name; a species the model never saw gets 0.0.
    """
    out = np.zeros((len(ids), len(columns)), dtype=np.float32)
    position = {label: j for j, label in enumerate(model_labels)}
    for i, col in enumerate(columns):
        if col in position:
            out[:, i] = probs[:, position[col]]
    frame = pd.DataFrame(out, columns=list(columns))
    frame.insert(0, "row_id", list(ids))
    return frame


def validate_submission(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise :class:`SubmissionError` unless the frame is what Kaggle expects."""
    expected = ["row_id", *columns]
    if list(frame.columns) != expected:
        extra = [c for c in frame.columns if c not in expected]
        missing = [c for c in expected if c not in frame.columns]
        raise SubmissionError(f"columns differ from sample_submission.csv (missing {missing[:5]}, extra {extra[:5]}, "
                              f"or out of order)")
    if frame["row_id"].duplicated().any():
        raise SubmissionError(f"duplicate row ids, e.g. {frame.loc[frame['row_id'].duplicated(), 'row_id'].iloc[0]}")
    values = frame[list(columns)]
    if not all(pd.api.types.is_numeric_dtype(values[c]) for c in values.columns):
        raise SubmissionError("non-numeric species column")
    arr = values.to_numpy(dtype=np.float64)
    if not np.isfinite(arr).all():
        raise SubmissionError("NaN or infinite value in the submission")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise SubmissionError(f"values outside [0, 1]: min {arr.min():.4g}, max {arr.max():.4g}")


def write_submission(frame: pd.DataFrame, columns: Sequence[str], path: str | Path) -> Path:
    """Validate, then write ``frame`` to ``path`` (atomically)."""
    validate_submission(frame, columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
    return path
