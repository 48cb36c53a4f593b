"""Loss registry: ``create_loss(name, **kwargs)``, ``list_losses()``, ``loss_activation(name)``, ``loss_kwargs(agent)``.

Each loss declares the output activation its logits are trained for (``sigmoid``: independent classes;
``softmax``: one distribution over classes), so training, validation and inference ask the registry instead of
comparing names: ``@LOSSES.register("my_loss", activation="sigmoid")`` is all a new loss needs.

Every loss takes ``(logits, targets)`` with ``targets`` in [0, 1] (soft targets: secondary labels, overlay
unions, CutMix areas). A NaN target means "unknown": that (example, class) entry is left out of the loss
(``[data] secondary_labels = mask``). ``label_smoothing`` ε moves multi-label targets to ``t (1 - ε) + ε / 2``
and softmax targets to ``t (1 - ε) + ε / classes``.
"""
from __future__ import annotations

import abc
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils.config_schema import AgentConfig
from utils.registry import Registry

LOSSES = Registry("loss")


class ElementwiseLoss(nn.Module, abc.ABC):
    """Mean over the known (non-NaN) entries of a per-(example, class) loss."""

    def __init__(self, label_smoothing: float = 0.0, class_weights: Optional[Sequence[float]] = None):
        super().__init__()
        self.label_smoothing = label_smoothing
        # positives of class c weigh class_weights[c] (as BCEWithLogitsLoss's pos_weight); negatives weigh 1
        self.register_buffer("pos_weight", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32))

    @abc.abstractmethod
    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-entry loss, (B, classes)."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets)
        t = torch.nan_to_num(targets, nan=0.0)
        if self.label_smoothing:
            t = t * (1 - self.label_smoothing) + self.label_smoothing / 2
        loss = self.elementwise(logits.float(), t.float())
        if self.pos_weight is not None:
            shape = (1, -1) + (1,) * (loss.dim() - 2)  # per class, also for (B, classes, bins) event targets
            loss = loss * (1 + (self.pos_weight.to(loss.device).view(shape) - 1) * t)
        return (loss * known).sum() / known.sum().clamp(min=1)


class BCELoss(ElementwiseLoss):
    """Binary cross-entropy on logits."""

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


class FocalLoss(ElementwiseLoss):
    """Sigmoid focal loss (Lin et al. 2017): ``α_t (1 - p_t)^γ BCE``, with ``p_t = p t + (1 - p)(1 - t)`` and
    ``α_t = α t + (1 - α)(1 - t)`` (``alpha < 0``: no class weighting), as ``torchvision.ops.sigmoid_focal_loss``."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25, label_smoothing: float = 0.0,
                 class_weights: Optional[Sequence[float]] = None):
        super().__init__(label_smoothing, class_weights)
        self.gamma, self.alpha = gamma, alpha

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * (1 - p_t) ** self.gamma
        if self.alpha >= 0:
            loss = loss * (self.alpha * targets + (1 - self.alpha) * (1 - targets))
        return loss


class BCEFocalLoss(ElementwiseLoss):
    """``BCE + focal_weight * focal``, the mix several BirdCLEF 2023 solutions trained with."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25, focal_weight: float = 1.0,
                 label_smoothing: float = 0.0, class_weights: Optional[Sequence[float]] = None):
        super().__init__(label_smoothing, class_weights)
        self.bce, self.focal, self.focal_weight = BCELoss(), FocalLoss(gamma, alpha), focal_weight

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.bce.elementwise(logits, targets) + self.focal_weight * self.focal.elementwise(logits, targets)


class AsymmetricLoss(ElementwiseLoss):
    """Asymmetric loss (Ridnik et al. 2021): positives ``-(1 - p)^γ+ log p``, negatives ``-p_m^γ- log(1 - p_m)``
    with the shifted probability ``p_m = max(p - clip, 0)``, which discards easy negatives (most of 182 species
    in a window). Soft targets weight the two parts."""

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 label_smoothing: float = 0.0, eps: float = 1e-8, class_weights: Optional[Sequence[float]] = None):
        super().__init__(label_smoothing, class_weights)
        self.gamma_pos, self.gamma_neg, self.clip, self.eps = gamma_pos, gamma_neg, clip, eps

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        p_m = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        pos = targets * (1 - p) ** self.gamma_pos * torch.log(p.clamp(min=self.eps))
        neg = (1 - targets) * p_m ** self.gamma_neg * torch.log((1 - p_m).clamp(min=self.eps))
        return -(pos + neg)


class SoftmaxCrossEntropy(nn.Module):
    """Cross-entropy over classes with probability targets (each row normalised to sum 1), as the BirdCLEF 2024
    winners trained: one species per 5-s window is the common case. Unknown (NaN) entries count as 0."""

    def __init__(self, label_smoothing: float = 0.0, class_weights: Optional[Sequence[float]] = None):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = torch.nan_to_num(targets.float(), nan=0.0)
        t = t / t.sum(dim=1, keepdim=True).clamp(min=1e-8)
        if self.weight is None:
            return F.cross_entropy(logits.float(), t, label_smoothing=self.label_smoothing)
        # each example weighs its (target-averaged) class weight, normalised as PyTorch does for class indices
        per_example = F.cross_entropy(logits.float(), t, reduction="none", label_smoothing=self.label_smoothing)
        w = t @ self.weight.to(logits.device)
        return (w * per_example).sum() / w.sum().clamp(min=1e-8)


@LOSSES.register("bce", activation="sigmoid")
def _bce(label_smoothing: float = 0.0, class_weights: Optional[Sequence[float]] = None) -> nn.Module:
    return BCELoss(label_smoothing, class_weights)


@LOSSES.register("ce", activation="softmax")
def _ce(label_smoothing: float = 0.0, class_weights: Optional[Sequence[float]] = None) -> nn.Module:
    return SoftmaxCrossEntropy(label_smoothing, class_weights)


@LOSSES.register("focal", activation="sigmoid")
def _focal(focal_gamma: float = 2.0, focal_alpha: float = 0.25, label_smoothing: float = 0.0,
           class_weights: Optional[Sequence[float]] = None) -> nn.Module:
    return FocalLoss(focal_gamma, focal_alpha, label_smoothing, class_weights)


@LOSSES.register("bce_focal", activation="sigmoid")
def _bce_focal(focal_gamma: float = 2.0, focal_alpha: float = 0.25, focal_weight: float = 1.0,
               label_smoothing: float = 0.0, class_weights: Optional[Sequence[float]] = None) -> nn.Module:
    return BCEFocalLoss(focal_gamma, focal_alpha, focal_weight, label_smoothing, class_weights)


@LOSSES.register("asl", activation="sigmoid")
def _asl(asl_gamma_pos: float = 0.0, asl_gamma_neg: float = 4.0, asl_clip: float = 0.05, label_smoothing: float = 0.0,
         class_weights: Optional[Sequence[float]] = None) -> nn.Module:
    return AsymmetricLoss(asl_gamma_pos, asl_gamma_neg, asl_clip, label_smoothing, class_weights=class_weights)


ACTIVATIONS = ("sigmoid", "softmax")


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss ``name`` (kwargs: label_smoothing, focal_gamma, focal_alpha, focal_weight, asl_gamma_pos,
    asl_gamma_neg, asl_clip, class_weights (per class: the weight of positives for the sigmoid losses, the class
    weight for ce); each loss is given the ones it declares, and a keyword no loss takes is refused by name).
    The module carries its ``activation``."""
    loss = LOSSES.create_from(name, kwargs)
    loss.activation = loss_activation(name)
    return loss


def loss_activation(name: str) -> str:
    """The output activation the loss ``name`` declared (``sigmoid`` or ``softmax``)."""
    activation = LOSSES.facts(name).get("activation")
    if activation not in ACTIVATIONS:
        raise ValueError(f"loss {name!r} declares activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    return activation


def loss_kwargs(agent: AgentConfig, class_weights: Optional[Sequence[float]] = None) -> dict[str, Any]:
    """``create_loss`` keywords from the ``[agent]`` section: every loss setting (each loss takes what it uses)."""
    return {"class_weights": class_weights, "label_smoothing": agent.label_smoothing,
            "focal_gamma": agent.focal_gamma, "focal_alpha": agent.focal_alpha, "focal_weight": agent.focal_weight,
            "asl_gamma_pos": agent.asl_gamma_pos, "asl_gamma_neg": agent.asl_gamma_neg, "asl_clip": agent.asl_clip}


def list_losses() -> list[str]:
    """Every registered loss name."""
    return LOSSES.names()
