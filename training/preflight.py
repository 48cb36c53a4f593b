"""Checks before a long run: the model can overfit one batch (seed 004), and how long an epoch will take
(seed 000's benchmark)."""
from __future__ import annotations

import copy
import logging
import time
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from training.trainer import Trainer

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


def time_batches(trainer: Trainer, loader: DataLoader, batches: int = 3) -> float:
    """Seconds per batch of the evaluation model's forward pass (eval mode) over the first ``batches`` batches of
    ``loader``."""
    batches = max(1, min(len(loader), batches))
    model = trainer.eval_model.eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i, (x, _) in enumerate(loader):
            if i == batches:
                break
            model(trainer.to_device(x))
    return (time.perf_counter() - t0) / batches


def estimate_run_time(trainer: Trainer, train_loader: DataLoader, val_loader: DataLoader, n_epochs: int,
                      steps: int = 20, extra_val: Optional[dict[str, DataLoader]] = None
                      ) -> dict[str, float]:
    """Time ``steps`` real training steps (data loading, augmentation, forward, backward, optimizer, EMA update;
    after two warm-up steps, timed apart as ``seconds_warmup``: they include a compiled model's compilation), a few
    batches of every set validated each epoch and of precise BN's statistics pass, and project one epoch and the
    whole run."""
    t0 = time.perf_counter()
    trainer.train_epoch(train_loader, 0, max_batches=2)  # warm-up: workers, allocator, kernels, compilation
    warmup = time.perf_counter() - t0
    steps = max(1, min(steps, len(train_loader)))
    t0 = time.perf_counter()
    trainer.train_epoch(train_loader, 0, max_batches=steps)
    per_step = (time.perf_counter() - t0) / steps
    bn_batches = trainer.options.precise_bn_batches if trainer.bn_loader is not None else 0
    precise_bn = 0.0
    if bn_batches:
        t0 = time.perf_counter()
        trainer.precise_bn(trainer.bn_loader, bn_batches)
        precise_bn = time.perf_counter() - t0
    val_sets = {"val": val_loader, **(extra_val or {})}
    validation = sum(time_batches(trainer, loader) * len(loader) for loader in val_sets.values())
    epoch = per_step * len(train_loader) + precise_bn + validation
    result = {"timed_steps": steps, "seconds_warmup": round(warmup, 3), "seconds_per_step": round(per_step, 4),
              "examples_per_s": round(train_loader.batch_size / per_step, 1),
              "train_batches_per_epoch": len(train_loader),
              "val_batches": sum(len(loader) for loader in val_sets.values()),
              "seconds_validation_per_epoch": round(validation, 4),
              "seconds_precise_bn_per_epoch": round(precise_bn, 4),
              "seconds_per_epoch": round(epoch, 4), "epochs": n_epochs,
              "seconds_for_run": round(epoch * n_epochs, 3), "minutes_for_run": round(epoch * n_epochs / 60, 2)}
    log.info("benchmark: %.3f s per step, ~%.0f s per epoch (validation %.1f s, precise BN %.1f s), ~%.1f min for "
             "%d epochs", per_step, epoch, validation, precise_bn, result["minutes_for_run"], n_epochs)
    return result
