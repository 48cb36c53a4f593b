"""What turns a recording into the archive's window vectors: a registered embedding model (``birdnet``, ``perch``,
``onnx:<file>``, ...) on raw windows at its own rate and length, or a trained checkpoint's penultimate layer (the
input of its classifier) on its own front end and window. Both read a file forward once, whatever its length.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from dataloader.audio import MonoReader, ResampledReader, open_with_length, resampled_length
from dataloader.embedder_base import file_identity
from dataloader.embedders import embedder_spec, load_embedder

CHUNK_WINDOWS = 64  # windows per model call: bounded memory for any recording length


class WindowEmbedder:
    """A registered embedding model on raw windows: ``window_s`` is the model's own window (BirdNET 3 s, Perch 5 s)."""

    def __init__(self, spec: str, threads: int = 1):
        parsed = embedder_spec(spec)
        if parsed is None:
            raise ValueError(f"{spec!r} is neither a registered embedding model nor a checkpoint file")
        self.spec = spec
        self.model = load_embedder(parsed[0], parsed[1], threads=threads)
        self.sample_rate = int(self.model.sample_rate)
        self.window_s = float(self.model.window_s)
        self.dim = int(self.model.dim)
        self.identity = self.model.identity

    def embed_inputs(self, windows: np.ndarray) -> np.ndarray:
        """(n, window samples) audio -> (n, dim) float32."""
        return np.asarray(self.model.embed(windows)[0], dtype=np.float32)

    def embed_file(self, path: str | Path, hop_s: float, start_s: float = 0.0, end_s: Optional[float] = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(window start seconds, (windows, dim) vectors) of ``path`` (or of ``start_s .. end_s`` of it): a window
        every ``hop_s`` seconds while one still starts inside the audio; the last one padded with silence."""
        return embed_frames(self, self.file_frames(path, hop_s, start_s, end_s)[1])

    def file_frames(self, path: str | Path, hop_s: float, start_s: float = 0.0, end_s: Optional[float] = None
                    ) -> tuple[float, Iterator[tuple[np.ndarray, np.ndarray]]]:
        """(the file's duration in seconds, chunks of (start seconds, (n, window samples) windows)), decoded and
        resampled forward as the chunks are taken."""
        reader, total = open_with_length(path)
        return total / reader.samplerate, self._windows(reader, total, hop_s, start_s, end_s)

    def _windows(self, reader: MonoReader, total: int, hop_s: float, start_s: float, end_s: Optional[float]
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        sr, win = self.sample_rate, int(round(self.window_s * self.sample_rate))
        with reader:
            rr = ResampledReader(reader, total, sr)
            length = rr.length
            lo = int(round(start_s * sr))
            hi = length if end_s is None else min(length, int(round(end_s * sr)))
            span = max(0, hi - lo)
            count = max(1, math.ceil((span - win) / (hop_s * sr) - 1e-9) + 1) if span > 0 else 0
            starts_s = start_s + np.arange(count) * hop_s
            for k in range(0, count, CHUNK_WINDOWS):
                chunk = starts_s[k:k + CHUNK_WINDOWS]
                a = int(round(chunk[0] * sr))
                b = min(hi, int(round(chunk[-1] * sr)) + win)
                audio = rr.read(a, b)
                windows = np.zeros((len(chunk), win), dtype=np.float32)
                for j, s in enumerate(chunk):
                    seg = audio[int(round(s * sr)) - a:][:win]
                    seg = seg[:max(0, hi - int(round(s * sr)))]
                    windows[j, :seg.size] = seg
                yield np.round(chunk, 6), windows


class CheckpointEmbedder:
    """A trained checkpoint's penultimate layer: its windows cut by its own front end and standardisation (as
    ``predict.py`` cuts them), the vector being what enters its classifier (``get_classifier()``)."""

    def __init__(self, spec: str, threads: int = 1):
        import torch  # noqa: PLC0415

        from dataloader.features import frontend_of_checkpoint  # noqa: PLC0415
        from dataloader.standardize import Standardizer  # noqa: PLC0415
        from factory.families import model_from_checkpoint  # noqa: PLC0415
        from inference.windows import InputGroup  # noqa: PLC0415
        from utils.checkpoints import ModelMeta, load_checkpoint  # noqa: PLC0415

        path = Path(spec.removeprefix("checkpoint:"))
        payload = load_checkpoint(path)
        meta = ModelMeta.from_payload(payload)
        torch.set_num_threads(max(1, threads))
        self.model = model_from_checkpoint(payload).eval()
        classifier = self.model.get_classifier()
        self._captured: list = []
        classifier.register_forward_hook(lambda _m, args, _out: self._captured.append(args[0].detach()))
        frontend = frontend_of_checkpoint(meta)
        self.group = InputGroup(frontend, Standardizer.from_dict(meta.standardizer), meta.pad_mode,
                                frontend.frames_for(meta.window_s), frontend.frames_for(meta.window_s))
        self.spec, self.identity = f"checkpoint:{path}", file_identity(path)
        self.sample_rate, self.window_s = int(frontend.sample_rate), float(meta.window_s)
        self.dim = int(self.embed_inputs(np.zeros((1, 1, frontend.rows, self.group.input_frames),
                                                  dtype=np.float32)).shape[1])

    def embed_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """(n, 1, rows, frames) model inputs -> (n, dim) float32 penultimate vectors."""
        import torch  # noqa: PLC0415

        self._captured.clear()
        with torch.inference_mode():
            self.model(torch.from_numpy(np.ascontiguousarray(inputs)))
        return self._captured[-1].float().flatten(1).numpy()

    def embed_file(self, path: str | Path, hop_s: float, start_s: float = 0.0, end_s: Optional[float] = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`WindowEmbedder.embed_file`."""
        return embed_frames(self, self.file_frames(path, hop_s, start_s, end_s)[1])

    def file_frames(self, path: str | Path, hop_s: float, start_s: float = 0.0, end_s: Optional[float] = None
                    ) -> tuple[float, Iterator[tuple[np.ndarray, np.ndarray]]]:
        """As :meth:`WindowEmbedder.file_frames`: chunks of (start seconds, (n, 1, rows, frames) model inputs)."""
        reader, length = open_with_length(path)
        return length / reader.samplerate, self._inputs(reader, length, reader.samplerate, hop_s, start_s, end_s)

    def _inputs(self, reader: MonoReader, length: int, rate: int, hop_s: float, start_s: float,
                end_s: Optional[float]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from inference.windows import cut_windows, window_starts  # noqa: PLC0415

        with reader:
            duration = resampled_length(length, rate, self.sample_rate) / self.sample_rate
            stop = duration if end_s is None else min(duration, end_s)
            if stop <= start_s:
                return
            starts = start_s + window_starts(stop - start_s, self.window_s, hop_s)
            at = 0
            for inputs in cut_windows(self.group, reader, starts, CHUNK_WINDOWS):
                yield np.round(starts[at:at + len(inputs)], 6), inputs
                at += len(inputs)


def embed_frames(embedder: "WindowEmbedder | CheckpointEmbedder", frames: Iterable[tuple[np.ndarray, np.ndarray]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(starts, (windows, dim) vectors) of an embedder's ``file_frames`` chunks, embedded here."""
    starts, parts = [], []
    for first, inputs in frames:
        starts.append(first)
        parts.append(embedder.embed_inputs(inputs))
    if not parts:
        return np.zeros(0), np.zeros((0, embedder.dim), dtype=np.float32)
    return np.concatenate(starts), np.concatenate(parts)


def load_window_embedder(spec: str, threads: int = 1) -> WindowEmbedder | CheckpointEmbedder:
    """The embedder of an archive: a registered model (``birdnet``, ``perch[:<file>]``, ``onnx:<file>``) or a
    checkpoint (``checkpoint:<file>``, or a path to an existing ``.pt``)."""
    if spec.startswith("checkpoint:") or (embedder_spec(spec) is None and Path(spec).is_file()):
        return CheckpointEmbedder(spec, threads)
    return WindowEmbedder(spec, threads)
