"""Batch-level augmentation on the device, vectorised: random gain, overlay mixing (union of labels),
Gaussian noise, SpecAugment masks."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch


class BatchAugment:
    """Applies the ``[augmentation]`` section to a training batch ``x (B, 1, n_mels, frames)``, ``y (B, classes)``."""

    def __init__(self, aug: Any, units_per_db: Optional[np.ndarray] = None):
        """``units_per_db`` (n_mels,): how far one dB moves each mel bin after standardisation
        (1 / std for per_frequency, zeros for per_clip, which is level-invariant); None disables gain."""
        self.aug = aug
        self.units_per_db = None if units_per_db is None else torch.as_tensor(units_per_db, dtype=torch.float32)

    @property
    def enabled(self) -> bool:
        a = self.aug
        return bool(a.data_augmentation and (a.augment_add_noise or a.augment_spec_augment or a.augment_mixup
                                             or a.augment_gain))

    def gain(self, x: torch.Tensor) -> torch.Tensor:
        """Random level change of ±``gain_db`` per example: the absolute-dB front end keeps recording level,
        so without this a model learns the level of its training recordings."""
        if self.units_per_db is None or self.aug.gain_db <= 0:
            return x
        db = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) * 2 - 1) * self.aug.gain_db
        return x + db * self.units_per_db.to(x.device).view(1, 1, -1, 1)

    def _masks(self, x: torch.Tensor, axis: int, max_width: int) -> torch.Tensor:
        """Boolean (B, 1, F, T) mask with ``n_masks`` random bands along ``axis`` (2 = freq, 3 = time)."""
        b, size = x.shape[0], x.shape[axis]
        width = torch.randint(0, max_width + 1, (b, self.aug.n_masks, 1), device=x.device)
        start = (torch.rand(b, self.aug.n_masks, 1, device=x.device) * (size - width + 1).clamp(min=1)).long()
        pos = torch.arange(size, device=x.device).view(1, 1, -1)
        band = ((pos >= start) & (pos < start + width)).any(dim=1)  # (B, size)
        return band.view(b, 1, size, 1) if axis == 2 else band.view(b, 1, 1, size)

    def mixup(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Overlay a shuffled partner on a random ``mixup_prob`` share of the batch by an element-wise max.

        On (standardised) dB mels the max of two spectrograms approximates the spectrogram of the two sounds
        added together (within 3 dB), so both calls stay at their own level, unlike a linear blend that
        weakens both; the targets become the union (max), as in soundscapes where species overlap.
        """
        b = x.shape[0]
        chosen = torch.rand(b, device=x.device) < self.aug.mixup_prob
        if b < 2 or not chosen.any():
            return x, y
        partner = torch.randperm(b, device=x.device)
        x = torch.where(chosen.view(b, 1, 1, 1), torch.maximum(x, x[partner]), x)
        y = torch.where(chosen.view(b, 1), torch.maximum(y, y[partner]), y)
        return x, y

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.enabled:
            return x, y
        if self.aug.augment_gain:
            x = self.gain(x)
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
