"""Decoding: any soundfile-readable file -> mono float32 at the target sample rate."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf
import soxr


class AudioError(Exception):
    """A recording that cannot be used; the message is the reason recorded in skipped_files.csv."""


def load_audio(path: str | Path, sample_rate: int, max_seconds: Optional[float] = None) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate`` (soxr resampling), at most ``max_seconds`` long.

    Raises :class:`AudioError` for a missing, unreadable or empty file, or non-finite samples.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError("missing file")
    try:
        with sf.SoundFile(path) as f:
            native_sr = f.samplerate
            frames = -1 if max_seconds is None else int(np.ceil(max_seconds * native_sr))
            audio = f.read(frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"unreadable: {exc}") from None
    if audio.shape[0] == 0:
        raise AudioError("zero-length audio")
    mono = audio[:, 0] if audio.shape[1] == 1 else audio.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise AudioError("non-finite samples (NaN or Inf)")
    if native_sr != sample_rate:
        mono = soxr.resample(mono, native_sr, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header (no decoding)."""
    info = sf.info(str(path))
    return info.frames / info.samplerate


class MonoReader:
    """Random access to a file's samples as mono float32 at its native rate, for block-wise processing."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise AudioError("missing file")
        try:
            self._file = sf.SoundFile(path)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise AudioError(f"unreadable: {exc}") from None
        self.samplerate, self.frames = self._file.samplerate, self._file.frames

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
