"""Batch-level augmentation on the device, vectorised: mixup (union of labels), Gaussian noise, SpecAugment."""
from __future__ import annotations

from typing import Any

import torch


class BatchAugment:
    """Applies the ``[augmentation]`` section to a training batch ``x (B, 1, n_mels, frames)``, ``y (B, classes)``."""

    def __init__(self, aug: Any):
        self.aug = aug

    @property
    def enabled(self) -> bool:
        a = self.aug
        return bool(a.data_augmentation and (a.augment_add_noise or a.augment_spec_augment or a.augment_mixup))

    def _masks(self, x: torch.Tensor, axis: int, max_width: int) -> torch.Tensor:
        """Boolean (B, 1, F, T) mask with ``n_masks`` random bands along ``axis`` (2 = freq, 3 = time)."""
        b, size = x.shape[0], x.shape[axis]
        width = torch.randint(0, max_width + 1, (b, self.aug.n_masks, 1), device=x.device)
        start = (torch.rand(b, self.aug.n_masks, 1, device=x.device) * (size - width + 1).clamp(min=1)).long()
        pos = torch.arange(size, device=x.device).view(1, 1, -1)
        band = ((pos >= start) & (pos < start + width)).any(dim=1)  # (B, size)
        return band.view(b, 1, size, 1) if axis == 2 else band.view(b, 1, 1, size)

    def mixup(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix a random ``mixup_prob`` share of the batch with shuffled partners; targets become the union
        (max), since both species are present in the mixed window, as in soundscapes."""
        b = x.shape[0]
        chosen = torch.rand(b, device=x.device) < self.aug.mixup_prob
        if b < 2 or not chosen.any():
            return x, y
        partner = torch.randperm(b, device=x.device)
        lam = torch.distributions.Beta(self.aug.mixup_alpha, self.aug.mixup_alpha).sample((b,)).to(x.device)
        lam = torch.where(chosen, lam, torch.ones_like(lam)).view(b, 1, 1, 1)
        x = lam * x + (1 - lam) * x[partner]
        y = torch.where(chosen.view(b, 1), torch.maximum(y, y[partner]), y)
        return x, y

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.enabled:
            return x, y
        if self.aug.augment_mixup and self.aug.mixup_prob > 0:
            x, y = self.mixup(x, y)
        if self.aug.augment_add_noise and self.aug.noise_std > 0:
            x = x + torch.randn_like(x) * self.aug.noise_std
        if self.aug.augment_spec_augment and self.aug.n_masks > 0:
            fill = x.mean(dim=(2, 3), keepdim=True)
            if self.aug.freq_mask_max > 0:
                x = torch.where(self._masks(x, 2, self.aug.freq_mask_max), fill, x)
            if self.aug.time_mask_max > 0:
                x = torch.where(self._masks(x, 3, self.aug.time_mask_max), fill, x)
        return x, y
