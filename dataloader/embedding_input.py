"""The ``embedding`` input kind: a foundation model's embeddings, one per 5-s row, as the front end of a head.

Features are (dim, rows) arrays: row ``r`` covers ``[r * row_s, (r + 1) * row_s)`` of the recording, so a 5-s
window is one frame and rows line up with the submission's rows (``n_windows``: a last partial row counts, padded
with silence). The stated rule for a model whose window is shorter than a row (BirdNET: 3 s in a 5-s row):
``ceil(row_s / window_s)`` windows evenly spaced from the row's start to its end (BirdNET: at 0 s and 2 s,
overlapping by 1 s), their embeddings averaged; a model whose window is longer than a row sees a window centred on
the row (silence past the file's ends). The cache stores these like mels (``emb-<hash>``, keyed by the model file's
name and size and the row length), built by the same parallel, atomic, resumable machinery.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from dataloader.embedders import Embedder, load_embedder
from dataloader.frontend import INPUT_KINDS, FrontEnd, n_windows

BATCH_WINDOWS = 32  # model windows per call


@dataclass(frozen=True)
class EmbeddingSettings:
    """An embedding front end: which model (registry name and file), what it takes, and the row length."""

    model: str = "birdnet"
    model_path: str = ""
    model_id: str = ""  # the model file's name and size: a new file makes a new cache
    sample_rate: int = 48000
    window_s: float = 3.0
    dim: int = 1024
    row_s: float = 5.0
    mode: str = "slice"
    max_length_s: float = 60.0
    kind: str = "embedding"
    output: str = "embedding"  # "logits": the model's own logits per row instead (a teacher whose head is not linear)


@lru_cache(maxsize=4)
def cached_embedder(name: str, model_path: str) -> Embedder:
    """One loaded model per process, for what it says about itself (rate, window, dimension, identity)."""
    return load_embedder(name, model_path)


_THREAD = threading.local()


def thread_embedder(name: str, model_path: str) -> Embedder:
    """The model as this thread runs it: one instance per thread (a TFLite interpreter must never be invoked by
    two threads at once, and decode threads compute embeddings side by side); the first thread's is the
    process's :func:`cached_embedder`."""
    models = getattr(_THREAD, "models", None)
    if models is None:
        models = _THREAD.models = {}
    key = (name, model_path)
    if key not in models:
        shared = cached_embedder(name, model_path)
        owner = getattr(shared, "owner_thread", None)
        if owner is None:
            shared.owner_thread = threading.get_ident()
            models[key] = shared
        else:
            models[key] = shared if owner == threading.get_ident() else load_embedder(name, model_path)
    return models[key]


def embedding_settings(name: str, model_path: str, row_s: float, mode: str = "slice",
                       max_length_s: float = 60.0, output: str = "embedding") -> EmbeddingSettings:
    """The settings of model ``name`` (loaded once to read what it takes and its identity); ``output = "logits"``
    makes the features the model's own logits (one row per class) rather than its embedding."""
    model = cached_embedder(name, model_path)
    if output not in ("embedding", "logits"):
        raise ValueError(f"embedding front end output {output!r}: embedding or logits")
    if output == "logits" and not model.labels:
        raise ValueError(f"{name}: the model declares no labels, so it has no logits to use")
    dim = model.dim if output == "embedding" else len(model.labels)
    return EmbeddingSettings(name, model_path, model.identity, model.sample_rate, model.window_s, dim, row_s,
                             mode, max_length_s, output=output)


@INPUT_KINDS.register("embedding", settings=EmbeddingSettings)
class EmbeddingInput(FrontEnd):
    """(dim, rows) embeddings of ``settings.model``; see the module docstring for the row rule."""

    kind, pad_value, cache_prefix, mixes_background = "embedding", 0.0, "emb", False

    def augment_ops(self) -> type:
        """Embeddings mix and take noise, but have no time or frequency axis to mask."""
        from dataloader.augment import EmbeddingOps  # noqa: PLC0415 - torch: training only

        return EmbeddingOps

    @property
    def rows(self) -> int:
        return int(self.settings.dim)

    @property
    def frames_per_second(self) -> float:
        return 1.0 / self.settings.row_s

    @property
    def model(self) -> Embedder:
        """The embedding model, this thread's own instance (see :func:`thread_embedder`)."""
        return thread_embedder(self.settings.model, self.settings.model_path)

    def prepare(self) -> None:
        """Load the model now, in the calling thread, so that a missing file or runtime is said at once."""
        cached_embedder(self.settings.model, self.settings.model_path)

    def level(self, block: np.ndarray) -> float:
        return float("inf")  # an embedding is never digital silence (the audio's own check is the decoder's)

    def row_windows(self) -> tuple[int, list[int]]:
        """(row samples, window starts relative to the row's start)."""
        s = self.settings
        row, win = int(round(s.row_s * s.sample_rate)), int(round(s.window_s * s.sample_rate))
        if win >= row:
            return row, [-((win - row) // 2)]
        k = math.ceil(row / win)
        return row, [int(round(i * (row - win) / (k - 1))) for i in range(k)] if k > 1 else [0]

    def embed_rows(self, read: Callable[[int, int], np.ndarray], length: int, first: int, count: int,
                   logits: Optional[list] = None) -> np.ndarray:
        """(dim, count) float32 embeddings of rows ``first .. first + count`` of ``length`` samples read by
        ``read(start, stop)`` (silence outside the audio); with a ``logits`` list, the model's own logits of the
        rows ((count, classes), the mean over each row's windows) are appended to it. With ``output = "logits"``
        the features are those logits, (classes, count)."""
        return self.embed_row_audio(self.row_audio(read, length, first, count), logits)

    def row_audio(self, read: Callable[[int, int], np.ndarray], length: int, first: int, count: int) -> np.ndarray:
        """(count, windows per row, window samples) float32: the model's windows of rows ``first .. first +
        count`` (see :meth:`embed_rows`), read but not embedded."""
        row, starts = self.row_windows()
        win = int(round(self.settings.window_s * self.settings.sample_rate))
        lo = max(0, first * row + min(starts))
        hi = min(length, (first + count - 1) * row + max(starts) + win)
        audio = read(lo, hi) if hi > lo else np.zeros(0, np.float32)
        windows = np.zeros((count, len(starts), win), dtype=np.float32)
        for r in range(count):
            for j, offset in enumerate(starts):
                a = (first + r) * row + offset
                seg = audio[max(a, lo) - lo:min(a + win, hi) - lo]
                pos = max(0, lo - a)
                windows[r, j, pos:pos + seg.size] = seg
        return windows

    def embed_row_audio(self, row_audio: np.ndarray, logits: Optional[list] = None) -> np.ndarray:
        """:meth:`embed_rows` of the windows :meth:`row_audio` read."""
        count, per_row = row_audio.shape[:2]
        windows = row_audio.reshape(count * per_row, -1)
        model = self.model
        out = np.empty((windows.shape[0], model.dim), dtype=np.float32)
        scores = []
        for i in range(0, len(windows), BATCH_WINDOWS):
            out[i:i + BATCH_WINDOWS], batch_logits = model.embed(windows[i:i + BATCH_WINDOWS])
            scores.append(batch_logits)
        if logits is not None or self.settings.output == "logits":
            if any(s is None for s in scores):
                raise ValueError(f"{self.settings.model}: the model gives no logits")
            per_row_logits = np.concatenate(scores).reshape(count, per_row, -1).mean(axis=1)
            if logits is not None:
                logits.append(per_row_logits)
            if self.settings.output == "logits":
                return np.ascontiguousarray(per_row_logits.T, dtype=np.float32)
        return out.reshape(count, per_row, model.dim).mean(axis=1).T

    def row_logits(self, path: str | Path) -> np.ndarray:
        """(rows, model classes) logits of a whole file (the model's own classes; the mean over each row's
        windows), decoded and resampled as :meth:`features` does."""
        from dataloader.audio import MonoReader, resample  # noqa: PLC0415

        with MonoReader(path) as reader:
            audio = resample(reader.read(0, reader.length()), reader.samplerate, self.sample_rate)
        found: list = []
        self.embed_rows(lambda a, b: audio[a:b], audio.size, 0, n_windows(audio.size / self.sample_rate,
                                                                           self.settings.row_s), found)
        return found[0]

    def transform(self, audio: np.ndarray) -> np.ndarray:
        count = n_windows(audio.size / self.sample_rate, self.settings.row_s)
        return self.embed_rows(lambda a, b: audio[a:b], audio.size, 0, count)

    def stream(self, read: Callable[[int, int], np.ndarray], length: int, block_samples: int
               ) -> tuple[int, Iterator[np.ndarray]]:
        count = n_windows(length / self.sample_rate, self.settings.row_s)
        per_block = max(1, block_samples // int(round(self.settings.row_s * self.sample_rate)))
        return count, (self.embed_rows(read, length, r, min(per_block, count - r)) for r in range(0, count, per_block))
