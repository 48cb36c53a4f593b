"""Loss registry: ``create_loss(name, **kwargs)``, ``list_losses()``."""
from __future__ import annotations

from typing import Any

from torch import nn

from factory.registry import Registry

LOSSES = Registry("loss")


@LOSSES.register("bce")
def _bce(**_: Any) -> nn.Module:
    """Binary cross-entropy on logits, multi-label (soft targets allowed)."""
    return nn.BCEWithLogitsLoss()


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss ``name``."""
    return LOSSES.create(name, **kwargs)


def list_losses() -> list[str]:
    return LOSSES.names()
