"""The mel transform of the mel front end: power spectrogram -> Slaney mel -> absolute dB (fixed floor).

:class:`dataloader.features.MelInput` (the front end object the cache, the datasets and inference share) owns
one. Frames are hop-aligned (``center=True``): frame ``i`` is centred on sample ``i * hop_length``.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import scipy.fft

from utils.config_schema import DataProcessConfig

DB_FLOOR_POWER = 1e-10  # fixed floor: -100 dB; never a per-file max reference or top_db
DB_FLOOR = -100.0  # 10 * log10(DB_FLOOR_POWER): digital silence, also the padding value of short windows
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


class MelTransform:
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
    def from_config(cls, dp: DataProcessConfig) -> "MelTransform":
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
