"""THE front end: mel power spectrogram -> absolute dB -> standardisation.

The cache builder and inference both call :class:`MelFrontEnd` and :class:`Standardizer`, so training
and inference see identical features.  Frames are hop-aligned (``center=True``): frame ``i`` is centred
on sample ``i * hop_length``, and a window of ``window_s`` seconds is ``window_s * sr / hop`` whole frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np
import scipy.fft

from utils.config_schema import DataProcessConfig

DB_FLOOR_POWER = 1e-10  # fixed floor: -100 dB; never a per-file max reference or top_db
DB_FLOOR = -100.0  # 10 * log10(DB_FLOOR_POWER): digital silence, also the padding value of short windows
_MIN_STD = 1e-3
_CHUNK_FRAMES = 256  # frames transformed at a time: the working set stays in cache, memory stays flat


def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (as ``torch.hann_window`` / ``scipy.signal.get_window('hann', n)``)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0), lin)


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters on the Slaney mel scale with Slaney area normalisation,
    equal to ``torchaudio.functional.melscale_fbanks(..., norm="slaney", mel_scale="slaney")`` and librosa's."""
    freqs = np.linspace(0.0, sample_rate // 2, n_fft // 2 + 1)
    f_pts = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(f_min), _hz_to_mel_slaney(f_max), n_mels + 2))
    slopes = f_pts[None, :] - freqs[:, None]
    f_diff = np.diff(f_pts)
    down, up = -slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up)) * (2.0 / (f_pts[2:] - f_pts[:-2]))
    return filters.astype(np.float32)


class MelFrontEnd:
    """Mel power spectrogram in absolute dB: NumPy framing (no copy), pocketfft real FFTs in float32,
    and a banded filter bank (each group of filters multiplies only the FFT bins it covers), all built once.

    Same result as ``torchaudio.transforms.MelSpectrogram(power=2, center=True, norm/mel_scale="slaney")`` +
    ``AmplitudeToDB`` with a fixed floor, without importing torch (light worker processes, lean inference).
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float,
                 filters_per_band: int = 16):
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.window = hann_window(n_fft)
        self.filters = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        self._bands: list[tuple[int, int, int, int, np.ndarray]] = []  # (bin lo, bin hi, mel lo, mel hi, weights)
        for m0 in range(0, n_mels, filters_per_band):
            m1 = min(n_mels, m0 + filters_per_band)
            bins = np.flatnonzero(self.filters[:, m0:m1].any(axis=1))
            if bins.size:  # a band can be empty when filters are narrower than an FFT bin
                lo, hi = int(bins[0]), int(bins[-1]) + 1
                self._bands.append((lo, hi, m0, m1, np.ascontiguousarray(self.filters[lo:hi, m0:m1].T)))

    @classmethod
    def from_config(cls, dp: DataProcessConfig) -> "MelFrontEnd":
        """Build from a ``[data_process]`` section (or anything with the same attributes)."""
        return cls(dp.sample_rate, dp.n_fft, dp.hop_length, dp.n_mels, dp.f_min, dp.f_max)

    def frames_for(self, seconds: float) -> int:
        """Whole frames in ``seconds`` of audio."""
        return int(round(seconds * self.sample_rate / self.hop_length))

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """(samples,) float -> (n_mels, 1 + samples // hop) float32 dB; frame ``i`` centred on sample ``i * hop``
        (ends reflected, or zero-padded when the audio is shorter than half a window)."""
        audio = np.asarray(audio, dtype=np.float32)
        half, hop, n = self.n_fft // 2, self.hop_length, audio.size
        out = np.empty((self.n_mels, 1 + n // hop), dtype=np.float32)
        j0 = -(-half // hop)  # first frame whose window starts inside the audio
        j1 = max(j0, (n - half) // hop - self.n_fft // hop - 1)  # frames from j1 on see (or come near) the end
        if j1 - j0 < 2:  # short audio: pad it whole
            self._transform(np.pad(audio, half, mode="reflect" if n > half else "constant"), out)
            return out
        # only the two ends are padded (reflected) copies; the interior frames are views of the audio itself
        self._transform(np.pad(audio[:j0 * hop + half], (half, 0), mode="reflect"), out[:, :j0])
        self._transform(audio[j0 * hop - half:j1 * hop + half], out[:, j0:j1])
        tail = audio[j1 * hop - half:]
        right = max(0, (out.shape[1] - 1 - j1) * hop + self.n_fft - tail.size)
        self._transform(np.pad(tail, (0, right), mode="reflect"), out[:, j1:])
        return out

    def _transform(self, padded: np.ndarray, out: np.ndarray) -> None:
        """dB mel of the ``out.shape[1]`` frames of ``padded`` (frame ``j`` starts at sample ``j * hop``), into ``out``."""
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[::self.hop_length]
        n = out.shape[1]
        buf = np.empty((min(_CHUNK_FRAMES, n), self.n_fft), dtype=np.float32)
        for c in range(0, n, _CHUNK_FRAMES):
            k = min(_CHUNK_FRAMES, n - c)
            np.multiply(frames[c:c + k], self.window, out=buf[:k])
            spec = scipy.fft.rfft(buf[:k], axis=-1, overwrite_x=True).view(np.float32)  # (k, 2 * n_freqs)
            np.square(spec, out=spec)
            power = spec[:, 0::2] + spec[:, 1::2]  # |X|^2, (k, n_freqs)
            for lo, hi, m0, m1, weights in self._bands:
                np.matmul(weights, power[:, lo:hi].T, out=out[m0:m1, c:c + k])
            block = out[:, c:c + k]  # to dB while it is still in the CPU cache
            np.maximum(block, DB_FLOOR_POWER, out=block)
            np.log10(block, out=block)
            block *= 10.0

    def blocks(self, read: Callable[[int, int], np.ndarray], total: int, block_frames: int
               ) -> Iterator[np.ndarray]:
        """The mel of ``total`` samples, ``block_frames`` frames at a time (concatenated: exactly ``self(audio)``).

        ``read(start, stop)`` returns those samples (forward reads that overlap by a window); each block reads
        exactly the samples its frames see (half a window either side), with the file's ends reflected as
        ``__call__`` does, so memory stays bounded for any length. Needs ``total > n_fft // 2``.
        """
        half, hop = self.n_fft // 2, self.hop_length
        n_frames = 1 + total // hop
        for f0 in range(0, n_frames, block_frames):
            f1 = min(n_frames, f0 + block_frames)
            start, stop = f0 * hop - half, (f1 - 1) * hop + half
            seg = np.asarray(read(max(0, start), min(total, stop)), dtype=np.float32)
            if seg.size != min(total, stop) - max(0, start):
                raise ValueError(f"truncated: {seg.size} samples where {min(total, stop) - max(0, start)} were expected "
                                 f"at sample {max(0, start)} of {total}")
            left, right = max(0, -start), max(0, stop - total)
            if left or right:
                seg = np.pad(seg, (left, right), mode="reflect")
            out = np.empty((self.n_mels, f1 - f0), dtype=np.float32)
            self._transform(seg, out)
            yield out


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
