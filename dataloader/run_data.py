"""The data of one run: the source's recordings and soundscapes, cached, with every report the summary needs.

``prepare_data(cfg)`` resolves ``[data] source`` through the source registry, merges duplicate recordings, caches
every recording with the run's front end (mels, or waveforms for Wav2Vec2), and caches what is cut from soundscapes: background windows,
pseudo-labelled windows and the labelled soundscape windows (split by file into training and validation).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from dataloader.features import FrontEnd
from dataloader.preprocess import CacheResult
from dataloader.sources import SourceData
from utils.config_schema import Config
from utils.tasks import get_task

log = logging.getLogger(__name__)
TESTING_SOUNDSCAPE_FILES = 6  # labelled soundscapes kept in testing mode


@dataclass
class RunData:
    """Everything prepared for training and submitting."""

    source: SourceData
    frontend: FrontEnd  # what the cache holds and the model takes
    cache: CacheResult  # the recordings' cache
    merged: pd.DataFrame  # duplicates merged (path, reason)
    background: Optional[pd.DataFrame] = None  # cached soundscapes for background mixing
    pseudo: Optional[pd.DataFrame] = None  # pseudo-labelled windows (dataset rows)
    windows: dict[str, pd.DataFrame] = field(default_factory=dict)  # labelled soundscape windows: train / val
    skipped: list[pd.DataFrame] = field(default_factory=list)  # every (path, reason) left out on the way

    @property
    def submits(self) -> bool:
        """Whether the source has soundscapes to write a Kaggle submission for."""
        return self.source.test_dir is not None

    def write_reports(self, run_dir: Path) -> None:
        """``skipped_files.csv`` (every file left out so far: path, reason) and, when the source has soundscapes,
        ``soundscapes.csv`` (path, filename, site, date, hour) in the run folder."""
        parts = [p for p in self.skipped if p is not None and len(p)]
        table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["path", "reason"])
        table.to_csv(run_dir / "skipped_files.csv", index=False)
        if self.source.soundscapes is not None:
            self.source.soundscapes.to_csv(run_dir / "soundscapes.csv", index=False)

    def summary(self) -> dict[str, Any]:
        """The run summary's data part: source, cache, what was dropped or could not be mapped."""
        cache, source = self.cache, self.source
        out: dict[str, Any] = {
            "data_dir": str(source.data_dir), "data_source": source.name, "is_demo": source.is_demo,
            "cache": str(cache.folder), "decoded": cache.decoded, "reused": cache.reused, "pruned": cache.pruned,
            "skipped": len(cache.skipped), "merged_duplicates": len(self.merged), "recordings": len(cache.table),
            "pseudo_windows": 0 if self.pseudo is None else len(self.pseudo),
            **{f"soundscape_windows_{name}": len(rows) for name, rows in self.windows.items()},
            **source.report,
        }
        if source.classes is not None:
            out["classes"] = len(source.classes)
        return out


def _cache_soundscapes(paths: list[str], cfg: Config, frontend: FrontEnd) -> pd.DataFrame:
    from dataloader.preprocess import build_cache  # noqa: PLC0415

    return build_cache(pd.DataFrame({"path": sorted(set(paths))}), frontend, cfg.paths.cache_dir,
                       cfg.data.num_workers, ray=cfg.data.ray).table


def prepare_data(cfg: Config, frontend: FrontEnd) -> RunData:
    """Resolve the data source, list recordings, build (or reuse) the caches of ``frontend`` (the model family's
    input)."""
    from dataloader.preprocess import build_cache  # noqa: PLC0415
    from dataloader.sources import load_source, merge_duplicates  # noqa: PLC0415
    from dataloader.splits import seeded_sample  # noqa: PLC0415

    source = load_source(cfg.data, cfg.paths)
    recordings, merged = merge_duplicates(source.recordings)
    if cfg.testing.testing:
        recordings = seeded_sample(recordings, cfg.testing.data_samples_for_testing, cfg.data.split_seed)
        log.info("testing mode: %d recordings of %d classes", len(recordings), recordings["primary_label"].nunique())
    prune = None if cfg.testing.testing else source.audio_root  # a testing subset prunes nothing
    cache = build_cache(recordings, frontend, cfg.paths.cache_dir, cfg.data.num_workers, prune_under=prune,
                        ray=cfg.data.ray)
    data = RunData(source, frontend, cache, merged, skipped=[cache.skipped, merged])
    data.background = background_windows(cfg, source, frontend)
    if cfg.data.pseudo_labels:
        data.pseudo = pseudo_labelled_windows(cfg, source, frontend)
    if source.windows is not None and len(source.windows) and get_task(cfg.data.task).soundscape_labels:
        data.windows = labelled_windows(cfg, source.windows, frontend)
    return data


def background_windows(cfg: Config, source: SourceData, frontend: FrontEnd) -> Optional[pd.DataFrame]:
    """``augment_background``: a seeded sample of the source's soundscapes, cached (front ends that mix
    backgrounds: mels)."""
    aug = cfg.augmentation
    if not (aug.data_augmentation and aug.augment_background and frontend.mixes_background):
        return None
    files = list(source.soundscapes["path"]) if source.soundscapes is not None else []
    if not files:
        log.warning("augment_background: no soundscapes in %s, no background mixing", source.soundscape_dir)
        return None
    picked = np.random.default_rng(cfg.trainer.seed).permutation(len(files))[:aug.background_files]
    table = _cache_soundscapes([files[i] for i in sorted(picked)], cfg, frontend)
    log.info("background mixing: %d soundscapes of %s", len(table), source.soundscape_dir)
    return table


def pseudo_labelled_windows(cfg: Config, source: SourceData, frontend: FrontEnd) -> pd.DataFrame:
    """``[data] pseudo_labels``: the CSV's windows with their soundscapes cached (``start`` in frames)."""
    from dataloader.curation import pseudo_label_rows  # noqa: PLC0415
    from dataloader.soundscape_windows import attach_cache  # noqa: PLC0415

    audio_dir = cfg.data.pseudo_audio_dir or source.soundscape_dir
    if not audio_dir:
        raise ValueError(f"[data] pseudo_labels: source {source.name} has no soundscape folder; set "
                         f"[data] pseudo_audio_dir")
    rows = pseudo_label_rows(cfg.data.pseudo_labels, audio_dir, cfg.data.window_s, cfg.data.pseudo_min_prob)
    return attach_cache(rows, _cache_soundscapes(list(rows["path"]), cfg, frontend), frontend)


def labelled_windows(cfg: Config, windows: pd.DataFrame, frontend: FrontEnd) -> dict[str, pd.DataFrame]:
    """The labelled soundscape windows (2026) split by file per ``[data] soundscape_labels``, as dataset rows."""
    from dataloader.soundscape_windows import as_training_rows, attach_cache, sample_files, split_windows  # noqa

    if cfg.testing.testing:
        windows = sample_files(windows, TESTING_SOUNDSCAPE_FILES, cfg.data.split_seed)
    parts = split_windows(windows, cfg.data.soundscape_labels, cfg.data.n_folds, cfg.data.fold, cfg.data.split_seed)
    if not any(len(p) for p in parts.values()):
        return {}
    cached = _cache_soundscapes(list(windows["path"]), cfg, frontend)
    return {name: attach_cache(as_training_rows(part), cached, frontend) for name, part in parts.items()}
