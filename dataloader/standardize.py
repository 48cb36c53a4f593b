"""Standardisation of features: statistics summed per row (mel bin) and the :class:`Standardizer` that applies them.

Statistics are fitted on a run's training recordings only (from per-file sums the cache stores), carried in
checkpoints as plain data, and applied by the front end's ``window`` in training and inference alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

_MIN_STD = 1e-3


class StatsAccumulator:
    """Running per-mel-bin sums (float64) of dB values, to fit a :class:`Standardizer` in one pass."""

    def __init__(self, n_mels: int):
        self.sum = np.zeros(n_mels)
        self.sumsq = np.zeros(n_mels)
        self.count = 0

    @staticmethod
    def sums(mel_db: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(per-bin sum, per-bin sum of squares, frames) of one (n_mels, frames) dB mel, in float64."""
        x = np.asarray(mel_db, dtype=np.float32)  # float64 accumulators, no float64 copy
        return x.sum(axis=1, dtype=np.float64), np.einsum("ij,ij->i", x, x, dtype=np.float64), int(x.shape[1])

    def add_sums(self, total: np.ndarray, total_sq: np.ndarray, count: int) -> None:
        """Add the output of :meth:`sums` (e.g. computed in a worker process)."""
        self.sum += total
        self.sumsq += total_sq
        self.count += count

    def add(self, mel_db: np.ndarray) -> None:
        """Add one (n_mels, frames) dB mel."""
        self.add_sums(*self.sums(mel_db))


@dataclass
class Standardizer:
    """Standardisation of dB mels: ``per_frequency`` / ``global`` use fitted statistics,
    ``per_clip`` each clip's own mean/std, ``none`` leaves dB values alone."""

    mode: str
    mean: np.ndarray  # (n_mels,) float32; per-bin for per_frequency, repeated value for global
    std: np.ndarray

    @classmethod
    def identity(cls, n_mels: int) -> "Standardizer":
        """Mode ``none``: dB values pass unchanged."""
        return cls("none", np.zeros(n_mels, dtype=np.float32), np.ones(n_mels, dtype=np.float32))

    @classmethod
    def fit(cls, mode: str, acc: StatsAccumulator) -> "Standardizer":
        """Statistics from accumulated sums (ignored by ``per_clip`` and ``none``)."""
        n = max(acc.count, 1)
        if mode == "global":
            mean = acc.sum.sum() / (n * acc.sum.size)
            var = acc.sumsq.sum() / (n * acc.sum.size) - mean ** 2
            mean_v, var_v = np.full(acc.sum.size, mean), np.full(acc.sum.size, var)
        else:
            mean_v = acc.sum / n
            var_v = acc.sumsq / n - mean_v ** 2
        std = np.sqrt(np.maximum(var_v, 0.0))
        if mode in ("per_clip", "none"):
            mean_v, std = np.zeros_like(mean_v), np.ones_like(std)
        return cls(mode, mean_v.astype(np.float32), np.maximum(std, _MIN_STD).astype(np.float32))

    @staticmethod
    def clip_stats(mel_db: np.ndarray) -> tuple[float, float]:
        """(mean, std) of one recording's dB mel, for ``per_clip`` (float64 accumulation)."""
        x = np.asarray(mel_db, dtype=np.float32)
        n = max(x.size, 1)
        mean = float(x.sum(dtype=np.float64)) / n
        mean_sq = float(np.einsum("ij,ij->", x, x, dtype=np.float64)) / n  # no float64 copy of the mel
        return mean, float(np.sqrt(max(mean_sq - mean ** 2, 0.0)))

    def affine(self, clip_mean: float = 0.0, clip_std: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale), each (n_mels,) float32: standardised = (dB - offset) * scale. ``per_clip`` uses the
        recording's own ``clip_mean``/``clip_std``; the other modes ignore them."""
        if self.mode == "per_clip":
            return (np.full(self.mean.shape, clip_mean, dtype=np.float32),
                    np.full(self.mean.shape, 1.0 / max(clip_std, _MIN_STD), dtype=np.float32))
        if self.mode == "none":
            return np.zeros_like(self.mean), np.ones_like(self.mean)
        return self.mean, (1.0 / self.std).astype(np.float32)

    def apply(self, window_db: np.ndarray, clip_mean: float = 0.0, clip_std: float = 1.0) -> np.ndarray:
        """Standardise a (n_mels, frames) dB window (or mel) as float32, given its recording's clip statistics."""
        offset, scale = self.affine(clip_mean, clip_std)
        out = np.subtract(window_db, offset[:, None], dtype=np.float32)
        out *= scale[:, None]
        return out

    def __call__(self, mel_db: np.ndarray) -> np.ndarray:
        """Standardise a whole recording's (n_mels, frames) dB mel (``per_clip``: by its own statistics)."""
        return self.apply(mel_db, *self.clip_stats(mel_db)) if self.mode == "per_clip" else self.apply(mel_db)

    def conversion_from(self, other: "Standardizer") -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(scale, shift), each (n_mels,) float32, that map values standardised by ``other`` onto this
        standardisation: ``mine = theirs * scale + shift``; None when the two standardise alike (``per_clip`` and
        ``none`` never differ; ``per_frequency``/``global`` differ by the statistics each run fitted)."""
        if self.mode != other.mode:
            raise ValueError(f"standardisation {self.mode} cannot be derived from {other.mode}: an ensemble shares "
                             f"one [data_process] normalization")
        if self.mode in ("per_clip", "none") or (np.array_equal(self.mean, other.mean)
                                                  and np.array_equal(self.std, other.std)):
            return None
        (o_mine, s_mine), (o_theirs, s_theirs) = self.affine(), other.affine()
        scale = (s_mine / s_theirs).astype(np.float32)
        return scale, ((o_theirs - o_mine) * s_mine).astype(np.float32)

    def units_per_db(self) -> np.ndarray:
        """(n_mels,) change of the standardised value per dB of level change (0 for level-invariant per_clip)."""
        if self.mode == "per_clip":
            return np.zeros_like(self.mean)
        if self.mode == "none":
            return np.ones_like(self.mean)
        return (1.0 / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists) for JSON manifests and weights_only checkpoints."""
        return {"mode": self.mode, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Standardizer":
        """Inverse of :meth:`to_dict` (lists or tensors)."""
        return cls(d["mode"], np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32))
