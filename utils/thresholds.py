"""Per-class decision thresholds from labelled scores: the lowest threshold that reaches a target precision."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

THRESHOLD_COLUMNS = ["class", "threshold", "precision", "recall", "positives", "reached"]


def thresholds_for_precision(targets: np.ndarray, scores: np.ndarray, classes: Sequence[str],
                             precision: float = 0.9) -> pd.DataFrame:
    """For each class, the lowest score threshold whose precision on ``(targets, scores)`` (examples x classes;
    targets ≥ 0.5 count as positive) is at least ``precision``: the most recall at that precision. A class whose
    precision never gets there keeps the threshold of its best precision (``reached`` False); a class without
    positives gets 1.0 (it never fires) and NaN precision / recall."""
    from sklearn.metrics import precision_recall_curve  # noqa: PLC0415

    rows = []
    for c, name in enumerate(classes):
        y = np.asarray(targets[:, c]) >= 0.5
        s = np.asarray(scores[:, c], dtype=np.float64)
        if not y.any():
            rows.append({"class": name, "threshold": 1.0, "precision": float("nan"), "recall": float("nan"),
                         "positives": 0, "reached": False})
            continue
        prec, rec, thr = precision_recall_curve(y, s)
        prec, rec = prec[:-1], rec[:-1]  # the last point (recall 0) has no threshold
        ok = np.flatnonzero(prec >= precision)
        reached = len(ok) > 0
        k = int(ok[0]) if reached else int(np.lexsort((-rec, -prec))[0])  # thresholds rise with the index
        rows.append({"class": name, "threshold": float(thr[k]), "precision": float(prec[k]),
                     "recall": float(rec[k]), "positives": int(y.sum()), "reached": reached})
    return pd.DataFrame(rows, columns=THRESHOLD_COLUMNS)
