"""Checks before a long run: the model can overfit one batch (seed 004), and how long an epoch will take
(seed 000's benchmark)."""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

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


def time_checkpoints(trainer: Trainer, path: Path, bench: dict[str, Any]) -> dict[str, Any]:
    """Save the model's checkpoint to ``path`` (timed) and add what a run saves each epoch (``last.pt``, and
    ``best.pt`` while it improves: two saves) to ``bench``'s epoch and run times; returns the updated keys."""
    from utils.checkpoints import save_checkpoint  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    save_checkpoint(path, trainer.checkpoint_payload(0, {}))
    save = time.perf_counter() - t0
    epoch = bench["seconds_per_epoch"] + 2 * save
    return {"seconds_checkpoint_save": round(save, 4), "seconds_per_epoch": round(epoch, 4),
            "seconds_for_run": round(epoch * bench["epochs"], 3),
            "minutes_for_run": round(epoch * bench["epochs"] / 60, 2)}


def project_pipeline(bench: dict[str, Any], before_training_s: float, prediction_s: float) -> dict[str, float]:
    """The whole run's time from a training benchmark (:func:`estimate_run_time`): what came before training in
    this run (start-up, and the demo's generation and the cache when they were made now), the first steps' warm-up
(a compiled model's compilation), the epochs, one more
    validation pass (the best checkpoint's evaluation), and the prediction (``prediction_s``: timed with the
    benchmark's model). ``minutes_for_pipeline`` is this run's projection; a run after it finds the demo and the
    cache made (``seconds_before_training`` mostly gone)."""
    total = (before_training_s + bench["seconds_warmup"] + bench["seconds_for_run"]
             + bench["seconds_validation_per_epoch"] + prediction_s)
    return {"seconds_before_training": round(before_training_s, 1), "seconds_prediction": round(prediction_s, 1),
            "seconds_for_pipeline": round(total, 1), "minutes_for_pipeline": round(total / 60, 2)}
