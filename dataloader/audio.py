"""Decoding: any soundfile-readable file -> mono float32 at the target sample rate."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf
import soxr


class AudioError(Exception):
    """A recording that cannot be used; the message is the reason recorded in skipped_files.csv."""


class MonoReader:
    """Random access to a file's samples as mono float32 at its native rate (whole, or block by block)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise AudioError("missing file")
        try:
            self._file = sf.SoundFile(path)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise AudioError(f"unreadable: {exc}") from None
        self.samplerate, self.frames = self._file.samplerate, self._file.frames

    def length(self, max_seconds: Optional[float] = None) -> int:
        """Samples to use (at most ``max_seconds``); raises :class:`AudioError` for an empty file."""
        if self.frames <= 0:
            raise AudioError("zero-length audio")
        return self.frames if max_seconds is None else min(self.frames, int(np.ceil(max_seconds * self.samplerate)))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` (clipped to the file) as mono float32; raises :class:`AudioError` on bad data."""
        try:
            self._file.seek(max(0, start))
            block = self._file.read(frames=max(0, min(stop, self.frames) - max(0, start)), dtype="float32",
                                    always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise AudioError(f"unreadable: {exc}") from None
        mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
        if not np.isfinite(mono).all():
            raise AudioError("non-finite samples (NaN or Inf)")
        return np.ascontiguousarray(mono)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "MonoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resample(audio: np.ndarray, native_rate: int, sample_rate: int) -> np.ndarray:
    """soxr (HQ) resampling to ``sample_rate``; a no-op at the same rate."""
    if native_rate == sample_rate:
        return audio
    return np.ascontiguousarray(soxr.resample(audio, native_rate, sample_rate, quality="HQ"), dtype=np.float32)


def load_audio(path: str | Path, sample_rate: int, max_seconds: Optional[float] = None) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate`` (soxr resampling), at most ``max_seconds`` long.

    Raises :class:`AudioError` for a missing, unreadable or empty file, or non-finite samples.
    """
    with MonoReader(path) as reader:
        return resample(reader.read(0, reader.length(max_seconds)), reader.samplerate, sample_rate)
