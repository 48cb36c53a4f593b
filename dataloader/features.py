"""THE front end object: one per set of settings, shared by the cache, the datasets, inference and the exports.

``make_frontend(settings)`` gives a :class:`MelInput` (``[data_process]`` settings: dB mels for the CNNs) or a
:class:`WaveformInput` (:class:`WaveformSettings`: raw samples for Wav2Vec2), chosen by the settings' ``kind``
through a registry of input kinds. Each owns:

- its frames per second, ``frames_for(seconds)`` and ``seconds(frames)``: no other module converts between them;
- ``feature_blocks(reader)`` / ``features(path)``: decode -> resample -> features of a whole file, block-wise for
  long files, in the stored precision (float16): the cache writes exactly this, and inference computes exactly
  this, so a model sees at inference the values it was trained on (see the README, "One front end");
- ``window(features, start, frames, ...)``: the crop / pad / standardise of one window, and ``windows(...)`` the
  consecutive (or context) windows of a whole file, which training, validation and inference all call.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np

from dataloader.frontend import (BLOCK_S, INPUT_KINDS, LONG_FILE_S, PAD_MODES, STORE_DTYPE, FrontEnd,  # noqa: F401
                                 WaveformSettings, crop_window, n_windows)
from dataloader.mel import DB_FLOOR, MelTransform
from dataloader.standardize import Standardizer
from utils.checkpoints import ModelMeta
from utils.config_schema import DataProcessConfig

INPUT_KIND_MODULES = {"embedding": "dataloader.embedding_input"}  # kinds registered by a module loaded on first use


@INPUT_KINDS.register("mel", settings=DataProcessConfig)
class MelInput(FrontEnd):
    """Mel power spectrogram in absolute dB (:class:`dataloader.mel.MelTransform`), hop-aligned frames."""

    kind, pad_value, cache_prefix, mixes_background = "mel", DB_FLOOR, "mel", True

    def __init__(self, settings: DataProcessConfig):
        super().__init__(settings)
        s = settings
        self.mel = MelTransform(s.sample_rate, s.n_fft, s.hop_length, s.n_mels, s.f_min, s.f_max)

    @property
    def rows(self) -> int:
        return int(self.settings.n_mels)

    @property
    def frames_per_second(self) -> float:
        return self.settings.sample_rate / self.settings.hop_length

    @property
    def normalization(self) -> str:
        return self.settings.normalization

    def level(self, block: np.ndarray) -> float:
        return float(block.max()) if block.size else DB_FLOOR

    def level_units(self, standardizer: Standardizer) -> Optional[np.ndarray]:
        return standardizer.units_per_db()

    def transform(self, audio: np.ndarray) -> np.ndarray:
        return self.mel(audio)

    def stream(self, read: Callable[[int, int], np.ndarray], length: int, block_samples: int
               ) -> tuple[int, Iterator[np.ndarray]]:
        hop = self.settings.hop_length
        return 1 + length // hop, self.mel.blocks(read, length, block_samples // hop)


@INPUT_KINDS.register("waveform", settings=WaveformSettings)
class WaveformInput(FrontEnd):
    """The samples themselves, (1, samples) at the target rate; the model normalises each window."""

    kind, pad_value, cache_prefix, mixes_background = "waveform", 0.0, "wave", False
    mask_unit_s = 0.01  # time masks in 10-ms units, as on a mel of 10-ms hops

    def augment_ops(self) -> type:
        """Signals add, noise scales with each example's level, masks are time-only silence."""
        from dataloader.augment import WaveformOps  # noqa: PLC0415 - torch: training only

        return WaveformOps

    @property
    def rows(self) -> int:
        return 1

    @property
    def frames_per_second(self) -> float:
        return float(self.settings.sample_rate)

    def transform(self, audio: np.ndarray) -> np.ndarray:
        return np.asarray(audio, dtype=np.float32)[None, :]

    def stream(self, read: Callable[[int, int], np.ndarray], length: int, block_samples: int
               ) -> tuple[int, Iterator[np.ndarray]]:
        return length, (read(a, min(length, a + block_samples))[None, :] for a in range(0, length, block_samples))


def _settings_object(kind: str, settings: Mapping[str, Any]) -> Any:
    """A settings dict (a checkpoint's ``data_process``, a worker's copy) as its dataclass; unknown keys of older
    checkpoints are left out."""
    cls = INPUT_KINDS.facts(kind)["settings"]
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in settings.items() if k in known})


def make_frontend(settings: DataProcessConfig | WaveformSettings | Mapping[str, Any], kind: Optional[str] = None
                  ) -> FrontEnd:
    """The front end of ``settings`` (a ``[data_process]`` section, :class:`WaveformSettings`, or either as a dict);
    ``kind`` (``mel`` / ``waveform``, a checkpoint's ``input``) defaults to the settings' own ``kind``."""
    kind = kind or (settings.get("kind", "mel") if isinstance(settings, Mapping) else getattr(settings, "kind", "mel"))
    _load_kind(kind)
    if isinstance(settings, Mapping):
        settings = _settings_object(kind, settings)
    return INPUT_KINDS.create(kind, settings=settings)


def _load_kind(kind: str) -> None:
    """Import the module that registers ``kind`` (embedding models pull in their runtimes only when used)."""
    if kind not in INPUT_KINDS and kind in INPUT_KIND_MODULES:
        import importlib  # noqa: PLC0415

        importlib.import_module(INPUT_KIND_MODULES[kind])


def as_frontend(frontend_or_settings: Any) -> FrontEnd:
    """A front end as it is, or the front end of settings (what the cache functions accept)."""
    if isinstance(frontend_or_settings, FrontEnd):
        return frontend_or_settings
    return make_frontend(frontend_or_settings)


def frontend_of_checkpoint(meta: ModelMeta) -> FrontEnd:
    """The front end a model (a checkpoint's or an export's :class:`utils.checkpoints.ModelMeta`) was trained with:
    its ``data_process`` settings and ``input`` kind."""
    return make_frontend(meta.data_process, meta.input)


def list_input_kinds() -> list[str]:
    """Every registered input kind."""
    return INPUT_KINDS.names()
