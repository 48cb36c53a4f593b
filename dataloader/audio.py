"""Decoding: any soundfile-readable file -> mono float32 at the target sample rate."""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = (".wav", ".ogg", ".flac", ".mp3")  # what training and prediction read (any case)


def audio_files(folder: str | Path) -> list[Path]:
    """The audio files directly in ``folder`` (OGG, WAV, FLAC, MP3; extensions in any case), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def audio_tree(folder: str | Path) -> list[Path]:
    """Every recording under ``folder``, any depth (OGG, WAV, FLAC, MP3, extensions in any case), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard i/N`` -> (i, N), 0 <= i < N."""
    index, _, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: i/N with 0 <= i < N (e.g. 0/4 ... 3/4; a SLURM array passes "
                         f"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    return i, n


def shard_files(files: Sequence[Path], root: str | Path, index: int, count: int) -> list[Path]:
    """The recordings of shard ``index`` of ``count``: by a hash of each one's path relative to ``root``, so every
    file lands in exactly one shard whatever the machine, the listing order or files added later."""
    return [f for f in files if zlib.crc32(Path(f).relative_to(root).as_posix().encode()) % count == index]


class AudioError(Exception):
    """A recording that cannot be used; the message is the reason recorded in skipped_files.csv."""


class MonoReader:
    """Random access to a file's samples as mono float32 at its native rate (whole, or block by block)."""

    def __init__(self, path: str | Path):
        self.path = path = Path(path)
        if not path.is_file():
            raise AudioError("missing file")
        try:
            self._file = sf.SoundFile(path)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise AudioError(f"unreadable: {exc}") from None
        self.samplerate, self.frames = self._file.samplerate, self._file.frames
        if self._file.format == "OGG" and not _ogg_ends_cleanly(path):
            self._file.close()
            raise AudioError("truncated: the Ogg stream has no complete end-of-stream page")

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
        expected = max(0, min(stop, self.frames) - max(0, start))
        if block.shape[0] < expected:
            raise AudioError(f"truncated: decoded {block.shape[0]} of {expected} samples from sample {max(0, start)}")
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


class MemoryReader:
    """The :class:`MonoReader` interface over samples already decoded (one decode shared by several front ends)."""

    def __init__(self, samples: np.ndarray, samplerate: int, path: str | Path = ""):
        self.samples, self.samplerate, self.frames, self.path = samples, samplerate, samples.size, Path(path)

    def length(self, max_seconds: Optional[float] = None) -> int:
        """Samples to use (at most ``max_seconds``); raises :class:`AudioError` for an empty file."""
        if self.frames <= 0:
            raise AudioError("zero-length audio")
        return self.frames if max_seconds is None else min(self.frames, int(np.ceil(max_seconds * self.samplerate)))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` (clipped)."""
        return self.samples[max(0, start):min(stop, self.frames)]

    def close(self) -> None:
        """Nothing to release (the samples are in memory)."""

    def __enter__(self) -> "MemoryReader":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def open_lenient(path: str | Path, block: int = 1 << 18) -> "MonoReader | MemoryReader":
    """A reader for inference, where a decodable file must never become fill rows: a :class:`MonoReader`, or, for
    an Ogg stream without a clean end (no end-of-stream page, as some recorders and tools write it, or a cut
    download), the samples that decode, in memory. Anything else unusable raises :class:`AudioError` as
    :class:`MonoReader` does."""
    try:
        return MonoReader(path)
    except AudioError as exc:
        if not str(exc).startswith("truncated: the Ogg stream"):
            raise
    parts = []
    with sf.SoundFile(path) as f:
        rate = f.samplerate
        while True:
            try:
                chunk = f.read(frames=block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError):
                break
            if not len(chunk):
                break
            parts.append(chunk.mean(axis=1, dtype=np.float32) if chunk.shape[1] > 1 else chunk[:, 0])
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if not np.isfinite(samples).all():
        raise AudioError("non-finite samples (NaN or Inf)")
    return MemoryReader(np.ascontiguousarray(samples), rate, path)


def _ogg_ends_cleanly(path: Path, tail_bytes: int = 1 << 16) -> bool:
    """True when the file's last Ogg page is complete (it ends exactly at the end of the file) and carries the
    end-of-stream flag, as every finished encoder writes it; a file cut short (an interrupted download) does not."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - tail_bytes))
        tail = f.read()
    i = tail.rfind(b"OggS")
    while i >= 0:
        if len(tail) >= i + 27 and tail[i + 4] == 0:  # capture pattern + stream structure version 0
            n_segments = tail[i + 26]
            lacing = tail[i + 27:i + 27 + n_segments]
            if len(lacing) == n_segments and i + 27 + n_segments + sum(lacing) == len(tail):
                return bool(tail[i + 5] & 0x04)
        i = tail.rfind(b"OggS", 0, i)
    return False


def resample(audio: np.ndarray, native_rate: int, sample_rate: int) -> np.ndarray:
    """soxr (HQ) resampling to ``sample_rate``; a no-op at the same rate."""
    if native_rate == sample_rate:
        return audio
    return np.ascontiguousarray(soxr.resample(audio, native_rate, sample_rate, quality="HQ"), dtype=np.float32)


def resampled_length(samples: int, native_rate: int, sample_rate: int) -> int:
    """Samples soxr produces from ``samples`` at ``native_rate`` (the exact count, rounded half up)."""
    return (2 * samples * sample_rate + native_rate) // (2 * native_rate)


def open_with_length(path: str | Path) -> tuple["MonoReader", int]:
    """An open :class:`MonoReader` of ``path`` and its length in samples (closed again when the length cannot be
    read): for a generator that reads the file later and closes it when done."""
    reader = MonoReader(path)
    try:
        return reader, reader.length()
    except BaseException:
        reader.close()
        raise


class ResampledReader:
    """Forward-only ``read(start, stop)`` of a :class:`MonoReader`'s first ``total`` samples resampled to
    ``sample_rate`` through a streaming soxr resampler: bit-identical to resampling the whole file at once,
    with memory bounded by the block size for any length."""

    def __init__(self, reader: MonoReader, total: int, sample_rate: int, block: int = 1 << 18):
        self._reader, self._total, self._block = reader, total, block
        self.length = resampled_length(total, reader.samplerate, sample_rate)
        self._stream = soxr.ResampleStream(reader.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
        self._buf, self._buf_start, self._consumed = np.zeros(0, dtype=np.float32), 0, 0

    def read(self, start: int, stop: int) -> np.ndarray:
        """Resampled samples ``start:stop``; ``start`` must not go back before an earlier call's ``start``."""
        if start < self._buf_start:
            raise ValueError("ResampledReader reads forward only")
        while self._buf_start + self._buf.size < stop and self._consumed < self._total:
            chunk = self._reader.read(self._consumed, min(self._total, self._consumed + self._block))
            if chunk.size == 0:
                raise AudioError(f"truncated: no samples after {self._consumed} of {self._total}")
            self._consumed += chunk.size
            out = self._stream.resample_chunk(chunk, last=self._consumed >= self._total)
            keep = min(start - self._buf_start, self._buf.size)
            self._buf = np.concatenate([self._buf[keep:], np.asarray(out, dtype=np.float32)])
            self._buf_start += keep
        return self._buf[start - self._buf_start:stop - self._buf_start].copy()


def load_audio(path: str | Path, sample_rate: int, max_seconds: Optional[float] = None) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sample_rate`` (soxr resampling), at most ``max_seconds`` long.

    Raises :class:`AudioError` for a missing, unreadable or empty file, or non-finite samples.
    """
    with MonoReader(path) as reader:
        return resample(reader.read(0, reader.length(max_seconds)), reader.samplerate, sample_rate)
