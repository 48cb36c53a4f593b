"""Scheduler registry: ``create_scheduler(name, optimizer, ...)``, ``list_schedulers()``.

Every schedule is defined per optimizer step (``scheduler.step()`` after each ``optimizer.step()``) as a
multiplier of the optimizer's base learning rate, which is set to the peak ``lr_warmup_end``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from factory.registry import Registry

SCHEDULERS = Registry("scheduler")


@SCHEDULERS.register("cosine")
def _cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, lr_start: float,
            lr_peak: float, lr_end: float, **_: Any) -> LambdaLR:
    """Linear warm-up lr_start -> lr_peak over warmup_steps, then cosine lr_peak -> lr_end at total_steps."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            lr = lr_start + (lr_peak - lr_start) * step / max(1, warmup_steps)
        else:
            progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            lr = lr_end + 0.5 * (lr_peak - lr_end) * (1 + math.cos(math.pi * progress))
        return lr / lr_peak
    return LambdaLR(optimizer, factor)


@SCHEDULERS.register("exponential")
def _exponential(optimizer: torch.optim.Optimizer, steps_per_epoch: int, gamma: float, **_: Any) -> LambdaLR:
    """lr_peak * gamma ** (step / steps_per_epoch): exponential decay by ``gamma`` per epoch, smooth per step."""
    return LambdaLR(optimizer, lambda step: gamma ** (step / max(1, steps_per_epoch)))


@SCHEDULERS.register("none")
def _constant(optimizer: torch.optim.Optimizer, **_: Any) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: 1.0)


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, **kwargs: Any) -> LambdaLR:
    """Build the schedule ``name`` (kwargs: total_steps, warmup_steps, steps_per_epoch, lr_start, lr_peak,
    lr_end, gamma)."""
    return SCHEDULERS.create(name, optimizer=optimizer, **kwargs)


def list_schedulers() -> list[str]:
    return SCHEDULERS.names()
