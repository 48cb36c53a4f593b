"""Scheduler registry: ``create_scheduler(name, optimizer, ...)``, ``list_schedulers()``.

Every schedule but ``plateau`` is defined per optimizer step (``scheduler.step()`` after each
``optimizer.step()``) as a multiplier of each parameter group's base learning rate (the peak
``lr_warmup_end``, times ``head_lr_scale`` for the head), so groups keep their ratio. ``plateau`` is stepped
once per epoch with the validation score (:func:`steps_per_epoch_end`).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from utils.config_schema import AgentConfig
from utils.registry import Registry

SCHEDULERS = Registry("scheduler")


@SCHEDULERS.register("cosine")
def _cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, lr_start: float,
            lr_peak: float, lr_end: float) -> LambdaLR:
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
def _exponential(optimizer: torch.optim.Optimizer, steps_per_epoch: int, gamma: float) -> LambdaLR:
    """lr_peak * gamma ** (step / steps_per_epoch): exponential decay by ``gamma`` per epoch, smooth per step."""
    return LambdaLR(optimizer, lambda step: gamma ** (step / max(1, steps_per_epoch)))


@SCHEDULERS.register("step")
def _step(optimizer: torch.optim.Optimizer, steps_per_epoch: int, step_epochs: int = 10, step_gamma: float = 0.1) -> LambdaLR:
    """lr_peak * step_gamma ** (epoch // step_epochs)."""
    period = max(1, step_epochs * steps_per_epoch)
    return LambdaLR(optimizer, lambda step: step_gamma ** (step // period))


@SCHEDULERS.register("onecycle")
def _onecycle(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, lr_start: float, lr_peak: float,
              lr_end: float) -> torch.optim.lr_scheduler.OneCycleLR:
    """torch's one-cycle: cosine up lr_start -> lr_peak over the warm-up, cosine down to lr_end."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=max(total_steps, 2),
        pct_start=min(max(warmup_steps / max(total_steps, 1), 1e-3), 0.999), anneal_strategy="cos",
        div_factor=lr_peak / max(lr_start, 1e-12), final_div_factor=max(lr_start, 1e-12) / max(lr_end, 1e-12))


@SCHEDULERS.register("plateau")
def _plateau(optimizer: torch.optim.Optimizer, plateau_patience: int = 2, plateau_factor: float = 0.5,
             lr_end: float = 0.0) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """Multiply the learning rate by plateau_factor when the validation score has not improved for
    plateau_patience epochs (never below lr_end)."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=plateau_factor,
                                                      patience=plateau_patience, min_lr=lr_end)


def steps_per_epoch_end(scheduler: Any) -> bool:
    """True for schedules stepped once per epoch with the validation score instead of after every step."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


@SCHEDULERS.register("none")
def _constant(optimizer: torch.optim.Optimizer) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: 1.0)


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, **kwargs: Any) -> Any:
    """Build the schedule ``name`` (kwargs: total_steps, warmup_steps, steps_per_epoch, lr_start, lr_peak,
    lr_end, gamma, step_epochs, step_gamma, plateau_patience, plateau_factor; each schedule is given the ones it
    declares, and a keyword no schedule takes is refused by name)."""
    return SCHEDULERS.create_from(name, kwargs, optimizer=optimizer)


def scheduler_kwargs(agent: AgentConfig, steps_per_epoch: int, n_epochs: int) -> dict[str, Any]:
    """``create_scheduler`` keywords from the ``[agent]`` section for a run of ``n_epochs`` epochs of
    ``steps_per_epoch`` optimizer steps (the name included: ``none`` when ``lr_decay`` is off)."""
    return {"name": agent.lr_decay_type if agent.lr_decay else "none", "total_steps": steps_per_epoch * n_epochs,
            "warmup_steps": int(round(agent.warmup_epochs * steps_per_epoch)), "steps_per_epoch": steps_per_epoch,
            "lr_start": agent.lr_start, "lr_peak": agent.lr_warmup_end, "lr_end": agent.lr_end,
            "gamma": agent.exp_gamma, "step_epochs": agent.step_epochs, "step_gamma": agent.step_gamma,
            "plateau_patience": agent.plateau_patience, "plateau_factor": agent.plateau_factor}


def list_schedulers() -> list[str]:
    """Every registered schedule name."""
    return SCHEDULERS.names()
