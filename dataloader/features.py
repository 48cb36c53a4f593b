"""THE front end: mel power spectrogram -> absolute dB -> standardisation.

The cache builder and inference both call :class:`MelFrontEnd` and :class:`Standardizer`, so training
and inference see identical features.  Frames are hop-aligned (``center=True``): frame ``i`` is centred
on sample ``i * hop_length``, and a window of ``window_s`` seconds is ``window_s * sr / hop`` whole frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torchaudio.functional as AF

DB_FLOOR_POWER = 1e-10  # fixed floor: -100 dB; never a per-file max reference or top_db
_MIN_STD = 1e-3


class MelFrontEnd:
    """Mel spectrogram in absolute dB with filters and window built once."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float):
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.window = torch.hann_window(n_fft)
        self.fbank = AF.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, norm="slaney",
                                        mel_scale="slaney").T.contiguous()  # (n_mels, n_freqs)

    @classmethod
    def from_config(cls, dp: Any) -> "MelFrontEnd":
        """Build from a ``[data_process]`` section (or anything with the same attributes)."""
        return cls(dp.sample_rate, dp.n_fft, dp.hop_length, dp.n_mels, dp.f_min, dp.f_max)

    def frames_for(self, seconds: float) -> int:
        """Whole frames in ``seconds`` of audio."""
        return int(round(seconds * self.sample_rate / self.hop_length))

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """(samples,) float32 -> (n_mels, 1 + samples // hop) float32 dB."""
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        pad_mode = "reflect" if x.numel() > self.n_fft // 2 else "constant"
        with torch.inference_mode():
            spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window, center=True, pad_mode=pad_mode,
                              return_complex=True)
            return self._power_to_db(spec)

    def _power_to_db(self, spec: torch.Tensor) -> np.ndarray:
        power = spec.real.square_() + spec.imag.square_()
        mel = self.fbank @ power
        return (10.0 * torch.log10(mel.clamp_(min=DB_FLOOR_POWER))).numpy()

    def blockwise(self, read: Callable[[int, int], np.ndarray], total: int, block_frames: int) -> np.ndarray:
        """The same mel as ``self(audio)`` for ``total`` samples, computed ``block_frames`` frames at a time.

        ``read(start, stop)`` returns those samples; each block reads exactly the samples its frames see
        (half a window either side), with the file's ends reflected as ``center=True`` does, so memory stays
        bounded for any length. Needs ``total > n_fft // 2``.
        """
        half, hop = self.n_fft // 2, self.hop_length
        n_frames = 1 + total // hop
        out = np.empty((self.n_mels, n_frames), dtype=np.float32)
        for f0 in range(0, n_frames, block_frames):
            f1 = min(n_frames, f0 + block_frames)
            start, stop = f0 * hop - half, (f1 - 1) * hop + half
            seg = read(max(0, start), min(total, stop))
            left, right = max(0, -start), max(0, stop - total)
            if left or right:
                seg = np.pad(seg, (left, right), mode="reflect")
            with torch.inference_mode():
                spec = torch.stft(torch.from_numpy(seg), self.n_fft, hop, window=self.window, center=False,
                                  return_complex=True)
                out[:, f0:f1] = self._power_to_db(spec)
        return out


class StatsAccumulator:
    """Running per-mel-bin sums (float64) of dB values, to fit a :class:`Standardizer` in one pass."""

    def __init__(self, n_mels: int):
        self.sum = np.zeros(n_mels)
        self.sumsq = np.zeros(n_mels)
        self.count = 0

    def add(self, mel_db: np.ndarray) -> None:
        x = mel_db.astype(np.float64)
        self.sum += x.sum(axis=1)
        self.sumsq += np.square(x).sum(axis=1)
        self.count += x.shape[1]


@dataclass
class Standardizer:
    """Standardisation of dB mels: ``per_frequency`` / ``global`` use fitted statistics,
    ``per_clip`` each clip's own mean/std, ``none`` leaves dB values alone."""

    mode: str
    mean: np.ndarray  # (n_mels,) float32; per-bin for per_frequency, repeated value for global
    std: np.ndarray

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

    @property
    def needs_fit(self) -> bool:
        return self.mode in ("per_frequency", "global")

    def __call__(self, mel_db: np.ndarray) -> np.ndarray:
        """(n_mels, frames) dB -> standardised float32."""
        if self.mode == "none":
            return mel_db.astype(np.float32, copy=False)
        if self.mode == "per_clip":
            return ((mel_db - mel_db.mean()) / max(float(mel_db.std()), _MIN_STD)).astype(np.float32)
        return ((mel_db - self.mean[:, None]) / self.std[:, None]).astype(np.float32)

    def units_per_db(self) -> np.ndarray:
        """(n_mels,) change of the standardised value per dB of level change (0 for level-invariant per_clip)."""
        if self.mode == "per_clip":
            return np.zeros_like(self.mean)
        if self.mode == "none":
            return np.ones_like(self.mean)
        return (1.0 / self.std).astype(np.float32)

    def silence(self) -> np.ndarray:
        """(n_mels,) value of digital silence (the dB floor) after standardisation, for padding."""
        floor = np.full(self.mean.shape, 10.0 * np.log10(DB_FLOOR_POWER), dtype=np.float32)
        if self.mode == "per_clip":
            return np.full(self.mean.shape, -3.0, dtype=np.float32)  # a few std below a clip's mean
        if self.mode == "none":
            return floor
        return (floor - self.mean) / self.std

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists) for JSON manifests and weights_only checkpoints."""
        return {"mode": self.mode, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Standardizer":
        """Inverse of :meth:`to_dict` (lists or tensors)."""
        return cls(d["mode"], np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32))
