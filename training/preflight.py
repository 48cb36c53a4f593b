"""Checks before a long run: the model can overfit one batch (seed 004), and how long an epoch and the run will take
(seed 000's benchmark, measured through the run's own code)."""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
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


def benchmark_training(trainer: Trainer, train_loader: DataLoader, val_loader: DataLoader, n_epochs: int,
                       steps: int, saved: Path, extra_val: Optional[dict[str, DataLoader]] = None,
                       finish: Callable[[], Any] = lambda: None) -> dict[str, Any]:
    """Time what a run of ``n_epochs`` does, for real, and project the epoch and the run:

    - two warm-up steps (workers, allocator, kernels; a compiled model's compilation): ``seconds_warmup``;
    - ``steps`` training steps (data loading, augmentation, forward, backward, optimizer, EMA), over several passes
      of a loader shorter than that: ``seconds_per_step``, the median pass's;
    - the model's checkpoint saved to ``saved`` (what the prediction's timing then loads); a run saves ``last.pt``
      and, while it improves, ``best.pt`` each epoch: two saves;
    - one epoch of a single step through :meth:`Trainer.fit` (precise BN, every validation set, its metrics, the
      callbacks: ``metrics.csv``, the checkpoints, ``training_curves.png``), then ``finish()`` (the best checkpoint's
      evaluation and the run's reports): the epoch less its step is each epoch's cost besides training
      (``seconds_validation_per_epoch`` with its metrics, and ``seconds_precise_bn_per_epoch``); what follows it is
      ``seconds_run_end``, paid once (a second such epoch, tried to keep once-only costs out of every epoch,
      projected the demo's first run 22 % long)."""
    t0 = time.perf_counter()
    trainer.train_epoch(train_loader, 0, max_batches=2)
    warmup = time.perf_counter() - t0
    steps, timed, paces = max(1, steps), 0, []
    while timed < steps:  # more steps than an epoch has: passes over the loader until ``steps``
        batches = min(steps - timed, len(train_loader))
        t0 = time.perf_counter()
        trainer.train_epoch(train_loader, 0, max_batches=batches)
        paces.append((time.perf_counter() - t0) / batches)
        timed += batches
    per_step = float(np.median(paces))  # a pass slowed by something else on the machine does not set the pace
    precise_bn = 0.0
    if trainer.options.precise_bn_batches and trainer.bn_loader is not None:
        t0 = time.perf_counter()
        trainer.precise_bn(trainer.bn_loader, trainer.options.precise_bn_batches)
        precise_bn = time.perf_counter() - t0
    from utils.checkpoints import save_checkpoint  # noqa: PLC0415

    saved.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    save_checkpoint(saved, trainer.checkpoint_payload(0, {}))
    save = time.perf_counter() - t0
    t0 = time.perf_counter()
    one_step_epoch = trainer.fit(train_loader, val_loader, 1, extra_val=extra_val, max_batches=1)[-1]["seconds"]
    finish()
    run_end = max(0.0, time.perf_counter() - t0 - one_step_epoch - 2 * save)
    validation = max(0.0, one_step_epoch - per_step - precise_bn)
    epoch = per_step * len(train_loader) + precise_bn + validation + 2 * save
    result = {"timed_steps": steps, "seconds_warmup": round(warmup, 3), "seconds_per_step": round(per_step, 4),
              "examples_per_s": round(train_loader.batch_size / per_step, 1),
              "train_batches_per_epoch": len(train_loader),
              "val_batches": len(val_loader) + sum(len(loader) for loader in (extra_val or {}).values()),
              "seconds_validation_per_epoch": round(validation, 4),
              "seconds_precise_bn_per_epoch": round(precise_bn, 4), "seconds_checkpoint_save": round(save, 4),
              "seconds_per_epoch": round(epoch, 4), "epochs": n_epochs,
              "seconds_for_run": round(epoch * n_epochs, 3), "minutes_for_run": round(epoch * n_epochs / 60, 2),
              "seconds_run_end": round(run_end, 3)}
    log.info("benchmark: %.3f s per step, ~%.0f s per epoch (validation %.1f s, precise BN %.1f s), ~%.1f min for "
             "%d epochs, then %.1f s for the run's end (evaluation, reports)", per_step, epoch, validation,
             precise_bn, result["minutes_for_run"], n_epochs, run_end)
    return result


def project_pipeline(bench: dict[str, Any], before_training_s: float, prediction_s: float) -> dict[str, float]:
    """The whole run's time from a training benchmark (:func:`benchmark_training`): what came before training in
    this run (start-up, and the demo's generation and the cache when they were made now), the training's set-up
    (split, statistics, loaders, model), the first steps' warm-up (a compiled model's compilation), the epochs, the
    run's end (the best checkpoint's evaluation and the reports), and the prediction (``prediction_s``: timed with
    the benchmark's model). ``minutes_for_pipeline`` is this run's projection; a run after it finds the demo and the
    cache made (``seconds_before_training`` mostly gone)."""
    total = (before_training_s + bench["seconds_setup"] + bench["seconds_warmup"] + bench["seconds_for_run"]
             + bench["seconds_run_end"] + prediction_s)
    return {"seconds_before_training": round(before_training_s, 1), "seconds_prediction": round(prediction_s, 1),
            "seconds_for_pipeline": round(total, 1), "minutes_for_pipeline": round(total / 60, 2)}
