"""DataLoaders for one fold: random training crops, fixed validation windows, seeded shuffling."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, WeightedRandomSampler

from dataloader.augment import AugmentingCollate, BackgroundBank, BatchAugment, ChunkBank
from dataloader.dataset import EventWindowDataset, WindowDataset, make_targets
from dataloader.features import FrontEnd
from dataloader.standardize import Standardizer
from utils.config_schema import DataConfig, TrainerConfig
from utils.tasks import get_task


def _seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker a NumPy seed derived from torch's per-worker seed."""
    np.random.seed(torch.initial_seed() % 2 ** 32)


def balanced_weights(primary_labels: Sequence[str]) -> np.ndarray:
    """Per-recording sampling weight ``count(class) ** -0.5``: rare classes are drawn more often, without the
    over-fitting of fully balanced (``count ** -1``) sampling."""
    counts = pd.Series(list(primary_labels)).value_counts()
    return np.array([counts[label] ** -0.5 for label in primary_labels], dtype=np.float64)


def _clip_stats(df: pd.DataFrame) -> Optional[list[tuple[float, float]]]:
    if "clip_mean" not in df:
        return None
    return list(zip(df["clip_mean"].astype(float), df["clip_std"].astype(float)))


class DistributedWeightedSampler(Sampler[int]):
    """Weighted sampling with replacement under torchrun: every rank draws the same seeded sample for the
    epoch and takes its own stride of it."""

    def __init__(self, weights: np.ndarray, num_samples: int, rank: int, world_size: int, seed: int):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_samples, self.rank, self.world_size, self.seed, self.epoch = num_samples, rank, world_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = len(self) * self.world_size
        drawn = torch.multinomial(self.weights, total, replacement=True, generator=g)
        return iter(drawn[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)


def window_dataset(df: pd.DataFrame, labels: Sequence[str], data: DataConfig, frontend: FrontEnd, crop: str,
                   standardizer: Standardizer) -> WindowDataset:
    """The dataset of a split for ``[data] task``: one ``window_s`` window per row (a fixed ``start`` frame when the
    table has one, i.e. ``crop = chunks``), recording-level targets, or frame-level ones for ``events``."""
    starts = df["start"].fillna(-1).astype(int).tolist() if "start" in df else None
    frames = frontend.frames_for(data.window_s)
    if get_task(data.task).frame_level:
        return EventWindowDataset(df["entry"], df["events"], labels, data.event_bins, frontend, frames, crop,
                                  data.pad_mode, standardizer, clip_stats=_clip_stats(df), starts=starts)
    targets = make_targets(df, labels, data)
    if "teacher_targets" in df:  # distillation: the teacher's soft targets beside the labels
        targets = np.hstack([targets, np.stack(df["teacher_targets"].to_list()).astype(np.float32)])
    if "teacher_embedding" in df:  # embedding distillation: the teacher's standardised embedding, last
        targets = np.hstack([targets, np.stack(df["teacher_embedding"].to_list()).astype(np.float32)])
    return WindowDataset(df["entry"], targets, frontend, frames, crop, data.pad_mode, standardizer, _clip_stats(df),
                         starts)


def make_loaders(train_df: pd.DataFrame, val_df: pd.DataFrame, labels: Sequence[str], data: DataConfig,
                 trainer: TrainerConfig, frontend: FrontEnd, standardizer: Standardizer,
                 augment: Optional[BatchAugment] = None, rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                 drop_last: bool = False) -> tuple[DataLoader, DataLoader]:
    """(train, validation) loaders over cache entries (column ``entry``) from the ``[data]`` and ``[trainer]``
    sections; validation uses each recording's first window (or each chunk, ``crop = chunks``). With ``augment``,
    training batches are augmented in the loader's worker processes (for CPU training, where the "device" is the
    training thread's own core). With ``world_size`` > 1 (torchrun) each rank loads its own share of both sets.
    ``pin_memory`` (training on CUDA): batches in page-locked host memory, so the trainer's ``non_blocking``
    copies to the device overlap compute instead of waiting. ``drop_last`` (a compiled model: static shapes) drops
    each epoch's last partial training batch, unless the set holds less than one batch."""
    train_ds = window_dataset(train_df, labels, data, frontend, data.crop, standardizer)
    common = dict(num_workers=trainer.num_workers, persistent_workers=trainer.num_workers > 0,
                  worker_init_fn=_seed_worker, pin_memory=pin_memory)
    generator = torch.Generator().manual_seed(trainer.seed)
    sampler: Optional[Sampler[int]] = None
    if data.sampler == "balanced":
        weights = balanced_weights(train_df["primary_label"])
        sampler = (DistributedWeightedSampler(weights, len(train_ds), rank, world_size, trainer.seed)
                   if world_size > 1 else
                   WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(train_ds),
                                         replacement=True, generator=generator))
    elif world_size > 1:
        sampler = DistributedSampler(train_ds, world_size, rank, shuffle=data.shuffle, seed=trainer.seed)
    train_loader = DataLoader(train_ds, batch_size=trainer.batch_size, shuffle=data.shuffle and sampler is None,
                              sampler=sampler, generator=generator,
                              drop_last=drop_last and len(train_ds) // world_size >= trainer.batch_size,
                              collate_fn=AugmentingCollate(augment) if augment is not None else None, **common)
    val_loader = make_eval_loader(val_df, labels, data, trainer, frontend, standardizer, rank, world_size,
                                  pin_memory)
    return train_loader, val_loader


def make_eval_loader(df: pd.DataFrame, labels: Sequence[str], data: DataConfig, trainer: TrainerConfig,
                     frontend: FrontEnd, standardizer: Standardizer, rank: int = 0, world_size: int = 1,
                     pin_memory: bool = False) -> DataLoader:
    """A loader that scores ``df`` in order: each row's fixed window (``start``) or first window, batches twice
    the training size; under torchrun each rank its share."""
    ds = window_dataset(df, labels, data, frontend, "first", standardizer)
    sampler = DistributedSampler(ds, world_size, rank, shuffle=False) if world_size > 1 else None
    return DataLoader(ds, batch_size=trainer.batch_size * 2, shuffle=False, sampler=sampler,
                      num_workers=trainer.num_workers, persistent_workers=trainer.num_workers > 0,
                      worker_init_fn=_seed_worker, pin_memory=pin_memory)


def chunk_bank(rows: pd.DataFrame, labels: Sequence[str], data: DataConfig, frontend: FrontEnd,
               standardizer: Standardizer) -> ChunkBank:
    """Soundscape windows with labels (cache rows with a fixed ``start``: pseudo-labelled and labelled train
    soundscape windows) and their targets, drawn at random for ``augment_soundscape_mix``."""
    return ChunkBank(window_dataset(rows.drop(columns=["teacher_targets", "teacher_embedding"], errors="ignore"), labels, data, frontend,
                                    "first", standardizer))


def background_bank(table: pd.DataFrame, data: DataConfig, frontend: FrontEnd, standardizer: Standardizer
                    ) -> BackgroundBank:
    """Random standardised windows of cached background soundscapes (``table``: their cache rows), for mixing."""
    dataset = WindowDataset(table["entry"], np.zeros((len(table), 0), np.float32), frontend,
                            frontend.frames_for(data.window_s), "random", data.pad_mode, standardizer,
                            _clip_stats(table))
    return BackgroundBank(dataset)
