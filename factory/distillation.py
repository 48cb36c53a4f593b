"""Knowledge distillation: a teacher's soft targets enter the loss beside the labels.

Training targets then carry ``2 * classes`` columns, the labels and the teacher's probabilities; validation targets
carry the labels alone, so validation losses and metrics are the plain ones.

Embedding distillation (``[agent] distill_embedding``): the student also regresses a foundation model's embedding of
each training row from its pooled features (:class:`EmbeddingStudent`, :class:`EmbeddingRegressionLoss`), the
embedding columns appended to the training targets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DistillationLoss(nn.Module):
    """``(1 - weight) * base(logits, labels) + weight * T² * BCE(sigmoid(logits / T), teacher)`` (Hinton et al.'s
    temperature-scaled soft targets, per class for sigmoid outputs; for softmax outputs the cross-entropy of the
    tempered distributions). A NaN soft target (a class the teacher does not predict) is left out."""

    def __init__(self, base: nn.Module, weight: float, temperature: float = 1.0):
        super().__init__()
        self.base, self.weight, self.temperature = base, weight, temperature
        self.activation = getattr(base, "activation", "sigmoid")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        classes = logits.shape[1]
        if targets.shape[1] != 2 * classes:  # validation: the labels alone
            return self.base(logits, targets)
        labels, raw = targets[:, :classes], targets[:, classes:].float()
        known, teacher = ~torch.isnan(raw), torch.nan_to_num(raw)  # NaN: a class the teacher does not predict
        t = self.temperature
        scaled = logits.float() / t
        if self.activation == "softmax":  # rows whose teacher covers every class
            rows = known.all(dim=1)
            soft = -(teacher / teacher.sum(dim=1, keepdim=True).clamp(min=1e-8) * F.log_softmax(scaled, dim=1))
            soft = (soft.sum(dim=1) * rows).sum() / rows.sum().clamp(min=1)
        else:
            soft = F.binary_cross_entropy_with_logits(scaled, teacher, reduction="none")
            soft = (soft * known).sum() / known.sum().clamp(min=1)
        return (1 - self.weight) * self.base(logits, labels) + self.weight * t * t * soft


class EmbeddingStudent(nn.Module):
    """A network that also learns a foundation model's embedding (feature distillation): in training its outputs are
    ``[logits | projection(pooled features)]``, the projection a linear map onto the teacher's ``dim`` standardised
    embedding dimensions; in evaluation the network's logits alone. The projection is used in training only:
    :attr:`inference_network` (what checkpoints store for inference and what exports) is the network unchanged.

    The network follows timm's ``forward_features`` / ``forward_head(x, pre_logits=True)``: the projection reads the
    pooled features before the classifier's dropout, and the logits go through the network's own head."""

    def __init__(self, network: nn.Module, dim: int):
        super().__init__()
        if not (hasattr(network, "forward_features") and hasattr(network, "forward_head")):
            raise ValueError(f"embedding distillation needs a network with forward_features / forward_head (a timm CNN "
                             f"with a linear head); {type(network).__name__} has none")
        self.network = network
        self.projection = nn.Linear(network.get_classifier().in_features, dim)
        self.dim = dim

    @property
    def inference_network(self) -> nn.Module:
        """The network without the projection: what inference loads and exports."""
        return self.network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.network(x)
        features = self.network.forward_features(x)
        logits = self.network.forward_head(features)
        pooled = self.network.forward_head(features, pre_logits=True)
        return torch.cat([logits, self.projection(pooled).to(logits.dtype)], dim=1)


def inference_network(model: nn.Module) -> nn.Module:
    """The part of a training model that inference runs (:class:`EmbeddingStudent`'s network; else the model)."""
    return getattr(model, "inference_network", model)


class EmbeddingRegressionLoss(nn.Module):
    """``base(logits, targets) + weight * MSE(projection, teacher embedding)`` in training, where the model gives
    ``outputs + dim`` columns and the targets end with the ``dim`` standardised embedding columns; rows whose
    embedding is NaN (mixed inputs) are left out of the regression. In evaluation (``outputs`` columns) the base
    loss alone."""

    def __init__(self, base: nn.Module, outputs: int, dim: int, weight: float):
        super().__init__()
        self.base, self.outputs, self.dim, self.weight = base, outputs, dim, weight
        self.activation = getattr(base, "activation", "sigmoid")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != self.outputs + self.dim:
            return self.base(logits, targets)
        predicted, embedding = logits[:, self.outputs:].float(), targets[:, -self.dim:].float()
        known = ~torch.isnan(embedding).any(dim=1)
        error = ((predicted - torch.nan_to_num(embedding)) ** 2).mean(dim=1)
        regression = (error * known).sum() / known.sum().clamp(min=1)
        return self.base(logits[:, :self.outputs], targets[:, :-self.dim]) + self.weight * regression
