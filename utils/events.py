"""Frame-level predictions back to events, and event-based precision / recall / F1 with an onset tolerance.

Matching follows the DCASE event-based metric (``sed_eval``'s EventBasedMetrics with an onset-only collar): a
predicted event is a true positive when a not yet matched reference event of the same file and class has its
onset within ``onset_tolerance_s``; each reference event matches at most one prediction (highest score first).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

EVENT_COLUMNS = ["file", "class", "onset", "offset", "score"]


def runs_above(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """``(start, stop)`` index pairs of the runs of consecutive ``scores`` at or above ``threshold``."""
    active = np.concatenate([[False], np.asarray(scores) >= threshold, [False]])
    edges = np.flatnonzero(active[1:] != active[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def probs_to_events(file: str, probs: np.ndarray, labels: Sequence[str], bin_s: float, threshold: float = 0.5,
                    min_event_s: float = 0.0) -> list[dict]:
    """Events of one recording from its per-bin probabilities ``(classes, bins)`` (bins of ``bin_s`` seconds from
    the start of the file): runs of bins at or above ``threshold``; score = the run's peak probability."""
    events = []
    for c, label in enumerate(labels):
        for start, stop in runs_above(probs[c], threshold):
            if (stop - start) * bin_s + 1e-9 >= min_event_s:
                events.append({"file": file, "class": label, "onset": round(start * bin_s, 4),
                               "offset": round(stop * bin_s, 4), "score": float(probs[c, start:stop].max())})
    return events


def event_metrics(reference: pd.DataFrame, predicted: pd.DataFrame, onset_tolerance_s: float = 0.5
                  ) -> dict[str, dict[str, float]]:
    """Per class and ``micro`` (all classes pooled): tp, fp, fn, precision, recall, f1. Both tables have the
    columns ``file, class, onset, offset`` (``predicted`` also ``score``)."""
    classes = sorted(set(reference["class"]) | set(predicted["class"]))
    counts = {c: {"tp": 0, "fp": 0, "fn": 0} for c in classes}
    for (file, cls), preds in predicted.groupby(["file", "class"]):
        refs = reference[(reference["file"] == file) & (reference["class"] == cls)]
        onsets = refs["onset"].to_numpy(dtype=float)
        used = np.zeros(len(onsets), dtype=bool)
        for onset in preds.sort_values("score", ascending=False)["onset"].to_numpy(dtype=float):
            gap = np.where(used, np.inf, np.abs(onsets - onset))
            if len(gap) and gap.min() <= onset_tolerance_s:
                used[int(gap.argmin())] = True
                counts[cls]["tp"] += 1
            else:
                counts[cls]["fp"] += 1
    for cls in classes:
        counts[cls]["fn"] = int((reference["class"] == cls).sum()) - counts[cls]["tp"]
    counts["micro"] = {k: sum(counts[c][k] for c in classes) for k in ("tp", "fp", "fn")}
    out = {}
    for name, n in counts.items():
        precision = n["tp"] / (n["tp"] + n["fp"]) if n["tp"] + n["fp"] else 0.0
        recall = n["tp"] / (n["tp"] + n["fn"]) if n["tp"] + n["fn"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {**n, "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}
    return out


def reference_events(table: pd.DataFrame) -> pd.DataFrame:
    """The annotated events of a recordings table (column ``events``) as an event table (score 1)."""
    rows = [{"file": f, "class": lbl, "onset": a, "offset": b, "score": 1.0}
            for f, events in zip(table["filename"], table["events"]) for a, b, lbl in events]
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)
