"""Inference tricks of the BirdCLEF winners, as settings of ``predict.py`` (each off by default; see the README for
their measured effect and cost): windows shifted around each row (shift test-time augmentation, or a row hop
shorter than the row with each row the overlap-weighted mean of the windows covering it), smoothing along each
file's rows, and file-level peak scaling. Each works on one file's ``(rows, classes)`` probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np


@dataclass(frozen=True)
class RowWindows:
    """Where each row's windows start relative to the row (seconds) and what each weighs in the row's mean."""

    offsets: tuple[float, ...] = (0.0,)
    weights: tuple[float, ...] = (1.0,)

    @classmethod
    def shifts(cls, shift_s: float) -> "RowWindows":
        """Shift TTA: the row's window and the windows ``shift_s`` seconds before and after it, equally weighted
        (0: the row's window alone)."""
        if shift_s <= 0:
            return cls()
        return cls((-shift_s, 0.0, shift_s), (1.0, 1.0, 1.0))

    @classmethod
    def hop(cls, row_s: float, hop_s: float) -> "RowWindows":
        """Windows every ``hop_s`` seconds (a divisor of ``row_s``): each row is the mean of every window that
        overlaps it, weighted by the overlap (``hop_s`` >= ``row_s``: the row's window alone)."""
        if hop_s <= 0 or hop_s >= row_s:
            return cls()
        steps = round(row_s / hop_s)
        if abs(steps * hop_s - row_s) > 1e-6:
            raise ValueError(f"row hop {hop_s} s must divide the {row_s}-s row")
        offsets = [k * hop_s for k in range(-steps + 1, steps)]
        return cls(tuple(offsets), tuple((row_s - abs(o)) / row_s for o in offsets))

    @property
    def count(self) -> int:
        """Windows per row."""
        return len(self.offsets)

    def starts(self, row_starts: np.ndarray) -> np.ndarray:
        """The window starts of rows starting at ``row_starts``, row-major (row 0's windows first)."""
        return (np.asarray(row_starts, dtype=np.float64)[:, None] + np.asarray(self.offsets)[None, :]).ravel()

    def combine(self, probs: np.ndarray) -> np.ndarray:
        """``(rows * count, classes)`` window probabilities -> ``(rows, classes)``: each row's weighted mean."""
        if self.count == 1:
            return probs
        w = np.asarray(self.weights, dtype=np.float32)
        per_row = probs.reshape(-1, self.count, probs.shape[-1])
        return (np.tensordot(w, per_row, axes=([0], [1])) / w.sum()).astype(np.float32)


def smooth_windows(probs: np.ndarray, k: int) -> np.ndarray:
    """Mean over each row and its ±``k`` neighbours in the same file (edges use the rows they have)."""
    if k <= 0 or len(probs) < 2:
        return probs
    cum = np.vstack([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0, dtype=np.float64)])
    idx = np.arange(len(probs))
    lo, hi = np.maximum(idx - k, 0), np.minimum(idx + k + 1, len(probs))
    return ((cum[hi] - cum[lo]) / (hi - lo)[:, None]).astype(np.float32)


def peak_scale(probs: np.ndarray, power: float) -> np.ndarray:
    """File-level peak scaling: each row multiplied by its file's maximum of the class raised to ``power`` (a class
    heard clearly somewhere in the file keeps its weaker rows; one never heard loud is damped); 0 = off."""
    if power <= 0 or not len(probs):
        return probs
    return (probs * probs.max(axis=0, keepdims=True) ** power).astype(np.float32)


@dataclass(frozen=True)
class RowPostprocess:
    """The per-file tricks in the order they apply: smoothing along the rows, then peak scaling."""

    smooth: int = 0
    peak_power: float = 0.0

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        """One file's ``(rows, classes)`` probabilities after the tricks."""
        return peak_scale(smooth_windows(probs, self.smooth), self.peak_power)


def describe(row_windows: RowWindows, post: RowPostprocess) -> list[str]:
    """The tricks that are on, in words (for the log)."""
    out = []
    if row_windows.count > 1:
        out.append(f"{row_windows.count} windows per row at {', '.join(f'{o:+g}' for o in row_windows.offsets)} s")
    if post.smooth:
        out.append(f"smoothing over ±{post.smooth} rows")
    if post.peak_power:
        out.append(f"file peak scaling, power {post.peak_power:g}")
    return out
