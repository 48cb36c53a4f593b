"""The front-end base: what every input kind (mel, waveform, embeddings) is, the registry they join, and the
window arithmetic they share (rows per recording, crop and pad). :mod:`dataloader.features` registers the mel and
waveform kinds and makes front ends from settings; :mod:`dataloader.embedding_input` registers the embedding kind."""
from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from dataloader.audio import MemoryReader, MonoReader, ResampledReader, resample
from dataloader.standardize import Standardizer
from utils.config_schema import DataProcessConfig
from utils.registry import Registry

STORE_DTYPE = np.float16  # what the cache stores, and therefore what every model is trained and run on
LONG_FILE_S = 300.0  # longer files are decoded (and resampled) and transformed in blocks ...
BLOCK_S = 60.0  # ... of this many seconds, so memory does not grow with a file's length
PAD_MODES = ("repeat", "silence")
INPUT_KINDS = Registry("input kind")


@dataclass(frozen=True)
class WaveformSettings:
    """What a waveform front end (for models on raw audio, e.g. Wav2Vec2) is made of: (1, samples) arrays at
    ``sample_rate``."""

    sample_rate: int = 16000
    mode: str = "slice"
    max_length_s: float = 60.0
    kind: str = "waveform"


def n_windows(duration_s: float, window_s: float = 5.0) -> int:
    """Rows of a soundscape (submission rows, embedding rows): max(1, ceil((duration - 0.1 s) / window)); a last
    partial window counts."""
    return max(1, math.ceil((duration_s - 0.1) / window_s))


def crop_window(features: np.ndarray, start: int, frames: int, pad_mode: str, pad_value: float) -> np.ndarray:
    """``frames`` columns of ``features`` from ``start`` (float32 when padded, else the stored slice itself).

    A window inside the recording is a slice. One that runs past the end is filled by ``pad_mode``: ``repeat``
    loops what the recording has from ``start`` (a short recording repeated), ``silence`` pads with
    ``pad_value`` (digital silence); a window that starts before 0 (a context window) is always padded with
    silence there."""
    n = features.shape[1]
    if 0 <= start and start + frames <= n:
        return features[:, start:start + frames]
    lo, hi = max(start, 0), min(start + frames, n)
    if pad_mode == "repeat" and start >= 0 and hi > lo:
        part = np.asarray(features[:, lo:hi], dtype=np.float32)
        return np.tile(part, (1, -(-frames // part.shape[1])))[:, :frames]
    out = np.full((features.shape[0], frames), pad_value, dtype=np.float32)
    if hi > lo:
        out[:, lo - start:hi - start] = features[:, lo:hi]
    return out


class FrontEnd(abc.ABC):
    """Audio file -> (rows, frames) features, and the windows the models see. Subclasses register an input kind."""

    kind: str = ""
    pad_value: float = 0.0  # digital silence in this front end's values
    cache_prefix: str = ""  # cache folders are <prefix>-<settings hash>
    mixes_background: bool = False  # whether background soundscapes can be overlaid on its windows
    mask_unit_s: float = 0.0  # seconds per unit of [augmentation] time_mask_max (0: one frame)

    def __init__(self, settings: DataProcessConfig | WaveformSettings):
        self.settings = settings

    @property
    def sample_rate(self) -> int:
        return int(self.settings.sample_rate)

    @property
    @abc.abstractmethod
    def rows(self) -> int:
        """Feature rows: mel bins, or 1 for a waveform."""

    @property
    @abc.abstractmethod
    def frames_per_second(self) -> float:
        """Feature frames (columns) per second of audio."""

    @property
    def normalization(self) -> str:
        """Standardisation fitted on the training recordings (a :class:`Standardizer` mode)."""
        return "none"

    def frames_for(self, seconds: float) -> int:
        """Whole frames in ``seconds`` of audio."""
        return int(round(seconds * self.frames_per_second))

    def whole_frames(self, seconds: float) -> bool:
        """Whether ``seconds`` is a whole number of frames (windows then never drift)."""
        exact = seconds * self.frames_per_second
        return abs(exact - round(exact)) <= 1e-6

    def seconds(self, frames: int) -> float:
        """Seconds covered by ``frames`` frames (to the millisecond)."""
        return round(frames / self.frames_per_second, 3)

    def settings_dict(self) -> dict[str, Any]:
        """The settings as plain data (cache ``settings.json``, checkpoints' ``data_process``)."""
        return dataclasses.asdict(self.settings)

    @property
    def recording_limit_s(self) -> Optional[float]:
        """Seconds kept of each training recording (``mode = single``), or None for the whole file."""
        return float(self.settings.max_length_s) if self.settings.mode == "single" else None

    def level(self, block: np.ndarray) -> float:
        """The loudest value of a block, comparable with :attr:`pad_value` (equal: digital silence only)."""
        return float(np.abs(block).max()) if block.size else 0.0

    def level_units(self, standardizer: Standardizer) -> Optional[np.ndarray]:
        """Standardised units per dB of level change, per row, for gain augmentation (None: no gain)."""
        return None

    def prepare(self) -> None:
        """Load what this front end needs (a model, a runtime) now, so that what is missing is said before any
        file is read; nothing to load by default."""

    def augment_ops(self) -> type:
        """How sounds combine and are masked in this front end's values, for batch augmentation
        (:class:`dataloader.augment.MelOps` unless a front end says otherwise; imported when training asks)."""
        from dataloader.augment import MelOps  # noqa: PLC0415 - torch: training only

        return MelOps

    @property
    def mask_time_unit(self) -> int:
        """Frames per unit of ``[augmentation] time_mask_max``."""
        return max(1, self.frames_for(self.mask_unit_s)) if self.mask_unit_s else 1

    def feature_blocks(self, reader: MonoReader, max_seconds: Optional[float] = None
                       ) -> tuple[int, Iterator[np.ndarray]]:
        """(frames, float32 feature blocks) of one file, decoded once: one block, or for files longer than
        ``LONG_FILE_S`` blocks of ``BLOCK_S`` seconds (resampled on the fly), so memory stays bounded."""
        total = reader.length(max_seconds)
        if total <= LONG_FILE_S * reader.samplerate:
            out = self.transform(resample(reader.read(0, total), reader.samplerate, self.sample_rate))
            return out.shape[1], iter([out])
        if reader.samplerate == self.sample_rate:
            return self.stream(reader.read, total, int(BLOCK_S * self.sample_rate))
        resampled = ResampledReader(reader, total, self.sample_rate)
        return self.stream(resampled.read, resampled.length, int(BLOCK_S * self.sample_rate))

    @abc.abstractmethod
    def transform(self, audio: np.ndarray) -> np.ndarray:
        """(samples,) float32 at the target rate -> (rows, frames) float32 features."""

    @abc.abstractmethod
    def stream(self, read: Callable[[int, int], np.ndarray], length: int, block_samples: int
               ) -> tuple[int, Iterator[np.ndarray]]:
        """(frames, blocks) of ``length`` samples read by ``read(start, stop)``, about ``block_samples`` at a time."""

    def features(self, path: str | Path, max_seconds: Optional[float] = None) -> tuple[np.ndarray, float]:
        """(features in the stored precision (rows, frames) float16, seconds of audio used) of a whole file (its
        first ``max_seconds`` when given): the same values the cache stores for it."""
        with MonoReader(path) as reader:
            return self.features_from(reader, max_seconds)

    def features_from(self, reader: MonoReader | MemoryReader, max_seconds: Optional[float] = None
                      ) -> tuple[np.ndarray, float]:
        """:meth:`features` of an open reader (a file, or samples decoded once for several front ends)."""
        used = reader.length(max_seconds)
        frames, blocks = self.feature_blocks(reader, max_seconds)
        out = np.empty((self.rows, frames), dtype=STORE_DTYPE)
        done = 0
        for block in blocks:
            out[:, done:done + block.shape[1]] = block
            done += block.shape[1]
        return out, used / reader.samplerate

    def window(self, features: np.ndarray, start: int, frames: int, standardizer: Standardizer,
               clip: Sequence[float] = (), pad_mode: str = "repeat") -> np.ndarray:
        """One standardised (rows, frames) float32 window from frame ``start`` (:func:`crop_window` padding;
        ``clip``: the recording's (mean, std) for ``per_clip``)."""
        return standardizer.apply(crop_window(features, start, frames, pad_mode, self.pad_value), *clip)

    def windows(self, features: np.ndarray, count: int, hop: int, standardizer: Standardizer,
                clip: Sequence[float] = (), pad_mode: str = "repeat", frames: Optional[int] = None) -> np.ndarray:
        """(count, 1, rows, frames) float32: window ``k`` starts at frame ``k * hop``; with ``frames > hop``
        (a model trained on longer inputs) each is a context window centred on its row, padded with silence.
        Exactly :meth:`window` for each, with whole windows standardised in one pass."""
        frames = frames or hop
        extra = frames - hop
        out = np.empty((count, 1, self.rows, frames), dtype=np.float32)
        full = 0 if extra else min(count, features.shape[1] // hop)
        if full:  # a view cut into windows, standardised into ``out`` (the arithmetic of Standardizer.apply)
            offset, scale = standardizer.affine(*clip)
            view = features[:, :full * hop].reshape(self.rows, full, hop).transpose(1, 0, 2)
            np.subtract(view, offset[:, None], out=out[:full, 0])
            out[:full, 0] *= scale[:, None]
        for k in range(full, count):
            out[k, 0] = self.window(features, k * hop - extra // 2, frames, standardizer, clip,
                                    "silence" if extra else pad_mode)
        return out


