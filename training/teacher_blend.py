"""The loop's students blended with the raw teacher, the teacher's share chosen on the labelled soundscape windows.

The 2026 winners did not submit their distilled CNNs alone: the foundation model stayed in the blend. A student
trained on pseudo-labels can fall below its teacher on the windows the competition scores (soundscapes), while it
adds classes the teacher cannot predict and a second opinion on the rest. Each round of the loop therefore also
scores the blend of its students with the round-0 teacher, exactly as ``predict.py --model <students> <teacher>
--blend rank|mean --weights ...`` computes it, with the teacher's weight picked from a grid on the labelled
validation windows (over the classes the teacher predicts; the others are the students' alone).

Picking the weight on the windows it is scored on would flatter it, so the reported score is cross-fitted: the
labelled recordings are split in two halves (seeded, by recording), each half is blended with the weight chosen on
the other half, and the score is that of the joined predictions. The weight to use at inference is then chosen on
every labelled window. With one labelled recording nothing can be held out and the score says so
(``cross_fitted = False``).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

# the teacher's share of the blend; 1.0 is left out: the students must keep the classes only they predict
TEACHER_WEIGHTS = tuple(round(float(w), 2) for w in np.arange(0.0, 0.951, 0.05))
BLEND_KINDS = ("off", "mean", "rank")


@dataclasses.dataclass(frozen=True)
class TeacherBlend:
    """The blend of a round's students with the teacher."""

    weight: float  # the teacher's share, chosen on every labelled window (what inference should use)
    score: float  # macro ROC-AUC over the teacher's classes, cross-fitted (see the module docstring)
    cross_fitted: bool
    kind: str  # mean or rank

    def member_weights(self, students: int) -> list[float]:
        """``predict.py --weights`` for ``--model <students...> <teacher members...>`` (one teacher member)."""
        return [round((1.0 - self.weight) / students, 6)] * students + [self.weight]


def stack_members(frames: Sequence[pd.DataFrame], row_ids: Sequence[str], classes: Sequence[str],
                  predicted: Sequence[Sequence[str]]) -> np.ndarray:
    """``(rows, members x classes)`` probabilities of ``row_ids`` from each member's frame, NaN where the member does
    not predict the class (the layout :func:`inference.predict.rank_blend` takes)."""
    out = np.full((len(row_ids), len(frames), len(classes)), np.nan, dtype=np.float64)
    for k, (frame, known) in enumerate(zip(frames, predicted)):
        rows = frame.set_index("row_id").reindex(list(row_ids))
        for j, c in enumerate(classes):
            if c in set(known):
                out[:, k, j] = rows[c].to_numpy(np.float64)
    return out.reshape(len(row_ids), -1)


def blend(stacked: np.ndarray, members: int, weights: Sequence[float], kind: str) -> np.ndarray:
    """The members' blend as ``predict.py`` computes it: ``mean`` = per class, the weighted mean over the members
    predicting it; ``rank`` = :func:`inference.predict.rank_blend`."""
    from inference.predict import rank_blend  # noqa: PLC0415

    if kind == "rank":
        return rank_blend(stacked.astype(np.float32), members, weights)
    x = stacked.reshape(len(stacked), members, -1)
    known = ~np.isnan(x)
    w = np.asarray(weights, dtype=np.float64)[None, :, None] * known
    total = (np.where(known, x, 0.0) * w).sum(axis=1)
    counts = w.sum(axis=1)
    return total / np.where(counts > 0, counts, 1.0)


def blend_score(truth: pd.DataFrame, blended: np.ndarray, classes: Sequence[str], scored: Sequence[str]) -> float:
    """Macro ROC-AUC over ``scored`` (those with a positive in ``truth``) of ``blended`` ``(rows, classes)``
    probabilities or ranks, row for row with ``truth``."""
    from utils.metrics import competition_score  # noqa: PLC0415

    frame = pd.DataFrame(blended, columns=list(classes))
    frame.insert(0, "row_id", truth["row_id"].to_numpy())
    keep = ["row_id", *scored]
    return competition_score(truth[keep].reset_index(drop=True), frame[keep], "row_id")


def _best_weight(stacked: np.ndarray, members: int, truth: pd.DataFrame, classes: Sequence[str],
                 scored: Sequence[str], kind: str) -> float:
    """The teacher's share (the last member) scoring best on these rows; ties go to the smaller share (the
    cheaper ensemble)."""
    best, best_w = -np.inf, 0.0
    for w in TEACHER_WEIGHTS:  # plain floats
        weights = [(1.0 - w) / (members - 1)] * (members - 1) + [w]
        score = blend_score(truth, blend(stacked, members, weights, kind), classes, scored)
        if score > best + 1e-12:
            best, best_w = score, w
    return best_w


def fit_teacher_blend(student_frames: Sequence[pd.DataFrame], student_classes: Sequence[Sequence[str]],
                      teacher_frame: pd.DataFrame, teacher_classes: Sequence[str], truth: pd.DataFrame,
                      kind: str = "mean", seed: int = 0) -> TeacherBlend:
    """The teacher's weight in a blend with the students (each frame: ``row_id`` + probabilities of the labelled
    windows; ``truth``: ``row_id`` + 0/1 columns), and the blend's cross-fitted score over the teacher's classes."""
    if kind not in BLEND_KINDS[1:]:
        raise ValueError(f"blend {kind!r}: allowed: {', '.join(BLEND_KINDS[1:])}")
    classes = list(truth.columns[1:])
    scored = [c for c in classes if c in set(teacher_classes)]
    members = len(student_frames) + 1
    stacked = stack_members([*student_frames, teacher_frame], truth["row_id"], classes,
                            [*student_classes, teacher_classes])
    stems = truth["row_id"].astype(str).str.rsplit("_", n=1).str[0].to_numpy()
    unique = np.array(sorted(set(stems)))
    if len(unique) < 2:
        weight = _best_weight(stacked, members, truth, classes, scored, kind)
        weights = [(1.0 - weight) / (members - 1)] * (members - 1) + [weight]
        score = blend_score(truth, blend(stacked, members, weights, kind), classes, scored)
        return TeacherBlend(weight, score, False, kind)
    half = set(unique[np.random.default_rng(seed).permutation(len(unique))[: len(unique) // 2]])
    part = np.array([s in half for s in stems])
    joined = np.zeros((len(truth), len(classes)))
    for chosen_on in (part, ~part):
        w = _best_weight(stacked[chosen_on], members, truth[chosen_on].reset_index(drop=True), classes, scored, kind)
        weights = [(1.0 - w) / (members - 1)] * (members - 1) + [w]
        joined[~chosen_on] = blend(stacked[~chosen_on], members, weights, kind)
    score = blend_score(truth, joined, classes, scored)
    return TeacherBlend(_best_weight(stacked, members, truth, classes, scored, kind), score, True, kind)
