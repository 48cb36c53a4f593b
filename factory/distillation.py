"""Knowledge distillation: a teacher's soft targets enter the loss beside the labels.

Training targets then carry ``2 * classes`` columns, the labels and the teacher's probabilities; validation targets
carry the labels alone, so validation losses and metrics are the plain ones.
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
