"""DataLoaders for one fold: random training crops, fixed validation windows, seeded shuffling."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from dataloader.augment import AugmentingCollate, BatchAugment
from dataloader.dataset import MelWindowDataset, multi_hot


def _seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker a NumPy seed derived from torch's per-worker seed."""
    np.random.seed(torch.initial_seed() % 2 ** 32)


def make_loaders(train_df: pd.DataFrame, val_df: pd.DataFrame, labels: Sequence[str], data: Any, trainer: Any,
                 frames: int, silence: np.ndarray, augment: Optional[BatchAugment] = None
                 ) -> tuple[DataLoader, DataLoader]:
    """(train, validation) loaders over cache entries (column ``entry``) from the ``[data]`` and ``[trainer]``
    sections; validation uses each recording's first window. With ``augment``, training batches are augmented
    in the loader's worker processes (for CPU training, where the "device" is the training thread's own core)."""
    sw = data.secondary_label_weight
    train_ds = MelWindowDataset(train_df["entry"], multi_hot(train_df, labels, sw), frames, data.crop, data.pad_mode,
                                silence)
    val_ds = MelWindowDataset(val_df["entry"], multi_hot(val_df, labels, sw), frames, "first", data.pad_mode,
                              silence)
    common = dict(num_workers=trainer.num_workers, persistent_workers=trainer.num_workers > 0,
                  worker_init_fn=_seed_worker)
    train_loader = DataLoader(train_ds, batch_size=trainer.batch_size, shuffle=data.shuffle,
                              generator=torch.Generator().manual_seed(trainer.seed),
                              collate_fn=AugmentingCollate(augment) if augment is not None else None, **common)
    val_loader = DataLoader(val_ds, batch_size=trainer.batch_size * 2, shuffle=False, **common)
    return train_loader, val_loader
