"""Checks before a long run: the model can overfit one batch (seed 004), and how long an epoch will take
(seed 000's benchmark)."""
from __future__ import annotations

import copy
import logging
import time
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from utils.trainer import Trainer

log = logging.getLogger(__name__)


def overfit_one_batch(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
                      lr: float = 1e-3) -> tuple[float, float]:
    """Train a copy of ``model`` (training mode, no augmentation) for ``steps`` Adam steps on the batch ``(x, y)``;
    return the first and the last loss. ``model`` itself is left as it was."""
    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    first = last = float("nan")
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(probe(x), y)
        loss.backward()
        optimizer.step()
        last = loss.item()
        if step == 0:
            first = last
    log.info("overfit one batch (%d examples, %d steps): loss %.4f -> %.4f", len(x), steps, first, last)
    return first, last


def estimate_run_time(trainer: Trainer, train_loader: DataLoader, val_loader: DataLoader, n_epochs: int, steps: int = 20
                      ) -> dict[str, float]:
    """Time ``steps`` real training steps (data loading, augmentation, forward, backward, optimizer; after two
    warm-up steps) and a few validation batches, and project one epoch and the whole run."""
    trainer.train_epoch(train_loader, 0, max_batches=2)  # warm-up: workers, allocator, kernels
    steps = max(1, min(steps, len(train_loader)))
    t0 = time.perf_counter()
    trainer.train_epoch(train_loader, 0, max_batches=steps)
    per_step = (time.perf_counter() - t0) / steps
    val_batches = min(len(val_loader), 3)
    t0 = time.perf_counter()
    trainer.model.eval()
    with torch.inference_mode():
        for i, (x, _) in enumerate(val_loader):
            if i == val_batches:
                break
            trainer.model(trainer.to_device(x))
    per_val = (time.perf_counter() - t0) / max(val_batches, 1)
    epoch = per_step * len(train_loader) + per_val * len(val_loader)
    result = {"timed_steps": steps, "seconds_per_step": round(per_step, 4),
              "examples_per_s": round(train_loader.batch_size / per_step, 1),
              "train_batches_per_epoch": len(train_loader), "val_batches": len(val_loader),
              "seconds_per_epoch": round(epoch, 2), "epochs": n_epochs,
              "seconds_for_run": round(epoch * n_epochs, 2), "minutes_for_run": round(epoch * n_epochs / 60, 2)}
    log.info("benchmark: %.3f s per step, ~%.0f s per epoch, ~%.1f min for %d epochs", per_step, epoch,
             result["minutes_for_run"], n_epochs)
    return result
