"""A small classifier on foundation-model embeddings: the ``embedding`` model family's network."""
from __future__ import annotations

import torch
from torch import nn

HEADS = ("linear", "mlp")


class EmbeddingHead(nn.Module):
    """(B, 1, dim, frames) embeddings -> (B, classes) logits: mean over the frames (one per 5-s row), layer norm,
    then a linear layer (``linear``) or one hidden layer of ``dim // 2`` with GELU and dropout (``mlp``)."""

    def __init__(self, dim: int, num_classes: int, head: str = "linear", drop_rate: float = 0.0):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown embedding head {head!r}; allowed: {', '.join(HEADS)}")
        self.norm = nn.LayerNorm(dim)
        layers: list[nn.Module] = [nn.Dropout(drop_rate)]
        if head == "mlp":
            layers += [nn.Linear(dim, dim // 2), nn.GELU(), nn.Dropout(drop_rate)]
            dim //= 2
        self.classifier = nn.Sequential(*layers, nn.Linear(dim, num_classes))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(x.float().mean(dim=-1).flatten(1)))
