"""Batch-level augmentation on the device, vectorised: random gain, overlay mixing (union of labels), CutMix
along time (labels by share), background soundscapes overlaid, Gaussian noise, SpecAugment masks."""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import default_collate

from utils.config_schema import AugmentationConfig


class BatchAugment:
    """Applies the ``[augmentation]`` section to a training batch ``x (B, 1, n_mels, frames)``, ``y (B, classes)``."""

    def __init__(self, aug: AugmentationConfig, units_per_db: Optional[np.ndarray] = None,
                 background: Optional[Callable[[int], torch.Tensor]] = None, domain: str = "mel"):
        """``units_per_db`` (n_mels,): how far one dB moves each mel bin after standardisation
        (1 / std for per_frequency, zeros for per_clip, which is level-invariant); None disables gain.
        ``background(n)``: n standardised background windows (1, n_mels, frames), e.g. from unlabeled
        soundscapes (:class:`BackgroundBank`). ``domain = "waveform"`` (batches (B, 1, 1, samples)): overlays
        add the signals instead of taking the max of dB mels, noise scales with each example's level, masks
        are time-only and silence, and there is no per-bin gain."""
        self.aug, self.domain = aug, domain
        self.units_per_db = None if units_per_db is None else torch.as_tensor(units_per_db, dtype=torch.float32)
        self.background = background

    @property
    def enabled(self) -> bool:
        a = self.aug
        return bool(a.data_augmentation and (a.augment_add_noise or a.augment_spec_augment or a.augment_mixup
                                             or a.augment_gain or a.augment_cutmix
                                             or (a.augment_background and self.background is not None)))

    def _chosen(self, b: int, prob: float, device: torch.device) -> torch.Tensor:
        return (torch.rand(b, device=device) < prob).nonzero().squeeze(1)

    def cutmix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a ``cutmix_prob`` share of the batch, a random time span (up to ``cutmix_max_fraction`` of the
        window) comes from a shuffled partner; targets mix by the share of time each contributes."""
        b, frames = x.shape[0], x.shape[3]
        chosen = self._chosen(b, self.aug.cutmix_prob, x.device)
        if b < 2 or chosen.numel() == 0:
            return x, y
        partner = torch.randperm(b, device=x.device)[chosen]
        width = (torch.rand(chosen.numel(), device=x.device) * self.aug.cutmix_max_fraction * frames).long()
        start = (torch.rand(chosen.numel(), device=x.device) * (frames - width + 1)).long()
        pos = torch.arange(frames, device=x.device).view(1, -1)
        span = (pos >= start[:, None]) & (pos < (start + width)[:, None])  # (n, frames)
        x[chosen] = torch.where(span.view(-1, 1, 1, frames), x[partner], x[chosen])
        share = (width.float() / frames).view(-1, 1)
        y = y.clone()
        y[chosen] = (1 - share) * torch.nan_to_num(y[chosen]) + share * torch.nan_to_num(y[partner])
        return x, y

    def overlay_background(self, x: torch.Tensor) -> torch.Tensor:
        """For a ``background_prob`` share of the batch, overlay (element-wise max, i.e. the sounds added) a
        background window attenuated by 0..``background_gain_db`` dB; targets are unchanged."""
        chosen = self._chosen(x.shape[0], self.aug.background_prob, x.device)
        if chosen.numel() == 0 or self.background is None:
            return x
        bg = self.background(chosen.numel()).to(x.device, dtype=x.dtype)
        if self.units_per_db is not None and self.aug.background_gain_db > 0:
            db = -torch.rand(chosen.numel(), 1, 1, 1, device=x.device) * self.aug.background_gain_db
            bg = bg + db * self.units_per_db.to(x.device).view(1, 1, -1, 1)
        x[chosen] = torch.maximum(x[chosen], bg)
        return x

    def gain(self, x: torch.Tensor) -> torch.Tensor:
        """Random level change of ±``gain_db`` per example (in place): the absolute-dB front end keeps recording
        level, so without this a model learns the level of its training recordings."""
        if self.units_per_db is None or self.aug.gain_db <= 0:
            return x
        db = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) * 2 - 1) * self.aug.gain_db
        return x.add_(db * self.units_per_db.to(x.device).view(1, 1, -1, 1))

    def _bands(self, x: torch.Tensor, axis: int, max_width: int) -> torch.Tensor:
        """Boolean (B, size) with ``n_masks`` random bands per example along ``axis`` (2 = freq, 3 = time)."""
        b, size = x.shape[0], x.shape[axis]
        width = torch.randint(0, max_width + 1, (b, self.aug.n_masks, 1), device=x.device)
        start = (torch.rand(b, self.aug.n_masks, 1, device=x.device) * (size - width + 1).clamp(min=1)).long()
        pos = torch.arange(size, device=x.device).view(1, 1, -1)
        return ((pos >= start) & (pos < start + width)).any(dim=1)

    def spec_augment(self, x: torch.Tensor) -> torch.Tensor:
        """SpecAugment: ``n_masks`` frequency and time bands per example set to the example's mean (one pass)."""
        b = x.shape[0]
        mask = torch.zeros(b, 1, x.shape[2], x.shape[3], dtype=torch.bool, device=x.device)
        if self.domain == "waveform":  # time masks only, in samples (time_mask_max frames of 10 ms), silenced
            mask |= self._bands(x, 3, self.aug.time_mask_max * 160).view(b, 1, 1, -1)
            return x.masked_fill_(mask, 0.0)
        if self.aug.freq_mask_max > 0:
            mask |= self._bands(x, 2, self.aug.freq_mask_max).view(b, 1, -1, 1)
        if self.aug.time_mask_max > 0:
            mask |= self._bands(x, 3, self.aug.time_mask_max).view(b, 1, 1, -1)
        return torch.where(mask, x.mean(dim=(1, 2, 3), keepdim=True), x, out=x)  # in place (exact overlap)

    def mixup(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Overlay a shuffled partner on a random ``mixup_prob`` share of the batch by an element-wise max.

        On (standardised) dB mels the max of two spectrograms approximates the spectrogram of the two sounds
        added together (within 3 dB), so both calls stay at their own level, unlike a linear blend that
        weakens both; the targets become the union (max), as in soundscapes where species overlap.
        Only the chosen examples are touched (in place).
        """
        b = x.shape[0]
        chosen = (torch.rand(b, device=x.device) < self.aug.mixup_prob).nonzero().squeeze(1)
        if b < 2 or chosen.numel() == 0:
            return x, y
        partner = torch.randperm(b, device=x.device)[chosen]
        if self.domain == "waveform":  # two sounds added are their samples added
            x[chosen] = x[chosen] + x[partner]
        else:
            x[chosen] = torch.maximum(x[chosen], x[partner])  # the gathers copy first: no aliasing
        y = y.clone()
        y[chosen] = torch.fmax(y[chosen], y[partner])  # fmax: a masked (NaN) label takes the partner's value
        return x, y

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented ``(x, y)``; ``x`` (a fresh batch) is modified in place."""
        if not self.enabled:
            return x, y
        if self.aug.augment_gain:
            x = self.gain(x)
        if self.aug.augment_mixup and self.aug.mixup_prob > 0:
            x, y = self.mixup(x, y)
        if self.aug.augment_cutmix and self.aug.cutmix_prob > 0:
            x, y = self.cutmix(x, y)
        if self.aug.augment_background and self.aug.background_prob > 0:
            x = self.overlay_background(x)
        if self.aug.augment_add_noise and self.aug.noise_std > 0:
            if self.domain == "waveform":  # noise at noise_std of each example's own level
                x = x.add_(torch.randn_like(x) * (self.aug.noise_std * x.std(dim=(1, 2, 3), keepdim=True)))
            else:
                x = x.add_(torch.randn_like(x), alpha=self.aug.noise_std)
        if self.aug.augment_spec_augment and self.aug.n_masks > 0:
            x = self.spec_augment(x)
        return x, y


class AugmentingCollate:
    """DataLoader ``collate_fn`` that stacks a batch and augments it in the worker process: on a CPU the
    batch augmentation then runs on the loader's cores, in parallel and off the training thread."""

    def __init__(self, augment: BatchAugment):
        self.augment = augment

    def __call__(self, items: list) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = default_collate(items)
        return self.augment(x, y)


class BackgroundBank:
    """``bank(n)``: n random standardised windows (n, 1, n_mels, frames) from a dataset of background recordings
    (e.g. a :class:`dataloader.dataset.MelWindowDataset` over cached unlabeled soundscapes)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __call__(self, n: int) -> torch.Tensor:
        idx = torch.randint(0, len(self.dataset), (n,))
        return torch.stack([self.dataset[int(i)][0] for i in idx])
