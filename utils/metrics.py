"""The BirdCLEF 2024 competition metric exactly as Kaggle scores it, the cmAP metrics of earlier BirdCLEF
years, and per-class tables and plots."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


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


def _scored(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str
            ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    solution = solution.set_index(row_id_column_name)
    submission = submission.set_index(row_id_column_name).loc[solution.index, solution.columns]
    return solution.to_numpy(dtype=float), submission.to_numpy(dtype=float), list(solution.columns)


def cmap_score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str) -> float:
    """Class-mean average precision over the species with at least one positive (BirdCLEF 2021-2022 style)."""
    y, p, _ = _scored(solution, submission, row_id_column_name)
    keep = y.sum(axis=0) > 0
    if not keep.any():
        raise ScoringError("no species column of the solution has a positive")
    return float(average_precision_score(y[:, keep], p[:, keep], average="macro"))


def padded_cmap_score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str,
                      padding_factor: int = 5) -> float:
    """BirdCLEF 2023's padded cmAP: ``padding_factor`` rows of all-ones added to both tables, so every species
    counts and a species without positives scores high instead of being undefined."""
    y, p, _ = _scored(solution, submission, row_id_column_name)
    pad = np.ones((padding_factor, y.shape[1]))
    return float(average_precision_score(np.vstack([y, pad]), np.vstack([p, pad]), average="macro"))


def epoch_rank(metrics: dict[str, float], monitor: str) -> Optional[tuple[float, float]]:
    """How good an epoch is for ``monitor`` (higher is better; None when the monitored value is NaN). A score
    monitor breaks ties by the lower loss of the same set (``val_score`` by ``val_loss``, ``soundscape_val_score``
    by ``soundscape_val_loss``): a score that saturates (ROC-AUC 1.0 early in training) would otherwise keep the
    first, still uncalibrated epoch that reached it."""
    value = metrics.get(monitor, float("nan"))
    if value != value:
        return None
    if monitor.endswith("loss"):
        return (-value, 0.0)
    loss = metrics.get(monitor[: -len("score")] + "loss", float("nan"))
    return (value, -loss if loss == loss else float("-inf"))


def validation_scores(targets: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """Metrics on validation windows, positives being the primary labels (target 1.0): ``val_score`` (the
    BirdCLEF 2024 metric), ``val_cmap`` and ``val_padded_cmap`` (BirdCLEF 2023); NaN when undefined."""
    ids = [str(i) for i in range(len(targets))]
    solution = pd.DataFrame((np.nan_to_num(targets) >= 1.0).astype(np.int8), columns=list(labels)).assign(row_id=ids)
    submission = pd.DataFrame(probs, columns=list(labels)).assign(row_id=ids)
    out = {}
    for key, fn in (("val_score", competition_score), ("val_cmap", cmap_score), ("val_padded_cmap", padded_cmap_score)):
        try:
            out[key] = round(fn(solution, submission, "row_id"), 6)
        except ScoringError:
            out[key] = float("nan")
    return out


def per_class_table(targets: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """One row per class: positives, ROC-AUC and average precision (NaN without positives or negatives)."""
    rows = []
    for j, label in enumerate(labels):
        y, p = targets[:, j], probs[:, j]
        both = 0 < y.sum() < len(y)
        rows.append({"class": label, "positives": int(y.sum()),
                     "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
                     "average_precision": float(average_precision_score(y, p)) if y.sum() > 0 else float("nan")})
    return pd.DataFrame(rows)


def plot_per_class(table: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """Horizontal bars of ROC-AUC and AP per class (worst first), for the run folder."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    t = table.sort_values("roc_auc", na_position="first")
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.22 * len(t) + 1)))
    pos = np.arange(len(t))
    ax.barh(pos - 0.2, t["roc_auc"].fillna(0), height=0.4, label="ROC-AUC")
    ax.barh(pos + 0.2, t["average_precision"].fillna(0), height=0.4, label="average precision")
    ax.set_yticks(pos, [f"{c} ({n})" for c, n in zip(t["class"], t["positives"])], fontsize=7)
    ax.set_xlim(0, 1), ax.legend(loc="lower right"), ax.set_title(title or "validation, per class (positives)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
