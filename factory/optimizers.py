"""Optimizer registry: ``create_optimizer(name, model, lr, weight_decay)``, ``list_optimizers()``.

Weight decay is not applied to norms and biases (1-d parameters), as timm does.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from factory.registry import Registry

OPTIMIZERS = Registry("optimizer")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and norms/biases without decay."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@OPTIMIZERS.register("adam")
def _adam(params: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


@OPTIMIZERS.register("adamw")
def _adamw(params: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr)


def create_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Build the optimizer ``name`` over ``model``'s parameters."""
    return OPTIMIZERS.create(name, params=param_groups(model, weight_decay), lr=lr)


def list_optimizers() -> list[str]:
    return OPTIMIZERS.names()
