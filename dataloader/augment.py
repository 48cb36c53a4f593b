"""Batch-level augmentation on the device, vectorised: random gain, soundscape chunks with labels blended in
(targets joined, capped), overlay mixing (union of labels), CutMix along time (labels by share), background
soundscapes overlaid, Gaussian noise, SpecAugment masks."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import default_collate

from utils.config_schema import AugmentationConfig


def random_bands(x: torch.Tensor, axis: int, max_width: int, n_masks: int) -> torch.Tensor:
    """Boolean (B, size) with ``n_masks`` random bands per example along ``axis`` (2 = rows, 3 = time)."""
    b, size = x.shape[0], x.shape[axis]
    width = torch.randint(0, max_width + 1, (b, n_masks, 1), device=x.device)
    start = (torch.rand(b, n_masks, 1, device=x.device) * (size - width + 1).clamp(min=1)).long()
    pos = torch.arange(size, device=x.device).view(1, 1, -1)
    return ((pos >= start) & (pos < start + width)).any(dim=1)


class MelOps:
    """How sounds combine and are masked in standardised dB mels."""

    @staticmethod
    def overlay(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Two sounds added: the element-wise max of their dB mels (within 3 dB), each call at its own level."""
        return torch.maximum(a, b)

    @staticmethod
    def blend(a: torch.Tensor, b: torch.Tensor, weight: float, units: Optional[torch.Tensor]) -> torch.Tensor:
        """``(1 - weight) a + weight b`` as sounds: each attenuated by its amplitude weight in dB (``units``: the
        standardised units of one dB per mel bin), then added (the max of the dB mels); a level-free
        standardisation (``units`` None) mixes the mels linearly."""
        if units is None:
            return (1 - weight) * a + weight * b
        return torch.maximum(a + 20 * math.log10(max(1 - weight, 1e-3)) * units,
                             b + 20 * math.log10(max(weight, 1e-3)) * units)

    @staticmethod
    def add_noise(x: torch.Tensor, std: float) -> torch.Tensor:
        """Gaussian noise of ``std`` standardised units, in place."""
        return x.add_(torch.randn_like(x), alpha=std)

    @staticmethod
    def mask(x: torch.Tensor, aug: AugmentationConfig, time_unit: int) -> torch.Tensor:
        """SpecAugment: frequency and time bands set to the example's mean, in place."""
        b = x.shape[0]
        mask = torch.zeros(b, 1, x.shape[2], x.shape[3], dtype=torch.bool, device=x.device)
        if aug.freq_mask_max > 0:
            mask |= random_bands(x, 2, aug.freq_mask_max, aug.n_masks).view(b, 1, -1, 1)
        if aug.time_mask_max > 0:
            mask |= random_bands(x, 3, aug.time_mask_max * time_unit, aug.n_masks).view(b, 1, 1, -1)
        return torch.where(mask, x.mean(dim=(1, 2, 3), keepdim=True), x, out=x)  # in place (exact overlap)


class WaveformOps:
    """How sounds combine and are masked in raw samples (batches (B, 1, 1, samples))."""

    @staticmethod
    def overlay(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Two sounds added are their samples added."""
        return a + b

    @staticmethod
    def blend(a: torch.Tensor, b: torch.Tensor, weight: float, units: Optional[torch.Tensor]) -> torch.Tensor:
        """``(1 - weight) a + weight b``: the samples weighted and added."""
        return (1 - weight) * a + weight * b

    @staticmethod
    def add_noise(x: torch.Tensor, std: float) -> torch.Tensor:
        """Gaussian noise at ``std`` of each example's own level, in place."""
        return x.add_(torch.randn_like(x) * (std * x.std(dim=(1, 2, 3), keepdim=True)))

    @staticmethod
    def mask(x: torch.Tensor, aug: AugmentationConfig, time_unit: int) -> torch.Tensor:
        """Time masks only (``time_mask_max`` units of ``time_unit`` samples), silenced, in place."""
        b = x.shape[0]
        return x.masked_fill_(random_bands(x, 3, aug.time_mask_max * time_unit, aug.n_masks).view(b, 1, 1, -1), 0.0)


class EmbeddingOps:
    """How examples combine in an embedding space (batches (B, 1, dim, rows)): mixtures average, no masks."""

    @staticmethod
    def overlay(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Two examples mixed: the mean of their embeddings (embedding mixup; the targets still unite)."""
        return (a + b) / 2

    @staticmethod
    def blend(a: torch.Tensor, b: torch.Tensor, weight: float, units: Optional[torch.Tensor]) -> torch.Tensor:
        """``(1 - weight) a + weight b`` of the embeddings."""
        return (1 - weight) * a + weight * b

    @staticmethod
    def add_noise(x: torch.Tensor, std: float) -> torch.Tensor:
        """Gaussian noise at ``std`` of each example's own spread, in place."""
        return WaveformOps.add_noise(x, std)

    @staticmethod
    def mask(x: torch.Tensor, aug: AugmentationConfig, time_unit: int) -> torch.Tensor:
        """No masks: an embedding has no time or frequency axis to hide."""
        return x


class BatchAugment:
    """Applies the ``[augmentation]`` section to a training batch ``x (B, 1, n_mels, frames)``, ``y (B, classes)``."""

    def __init__(self, aug: AugmentationConfig, units_per_db: Optional[np.ndarray] = None,
                 background: Optional[Callable[[int], torch.Tensor]] = None, ops: type = MelOps, time_unit: int = 1,
                 chunks: Optional[Callable[[int], tuple[torch.Tensor, torch.Tensor]]] = None,
                 embedding_columns: int = 0):
        """``units_per_db`` (n_mels,): how far one dB moves each mel bin after standardisation
        (1 / std for per_frequency, zeros for per_clip, which is level-invariant); None disables gain.
        ``background(n)``: n standardised background windows (1, n_mels, frames), e.g. from unlabeled
        soundscapes (:class:`BackgroundBank`). ``ops``: how sounds combine and are masked in the batches' domain,
        the front end's :meth:`~dataloader.frontend.FrontEnd.augment_ops`; :class:`WaveformOps` (batches
        (B, 1, 1, samples)): overlays
        add the signals instead of taking the max of dB mels, noise scales with each example's level, masks
        are time-only and silence, and there is no per-bin gain. ``time_unit``: columns per unit of
        ``time_mask_max`` (1 mel frame; a waveform's 10 ms of samples). ``chunks(n)``: n soundscape windows with
        their targets (pseudo-labelled or labelled; :class:`ChunkBank`) for ``augment_soundscape_mix``.
        ``embedding_columns``: the targets end with a teacher's embedding of each input (embedding distillation);
        an input mixed with another loses it (NaN), having no embedding of its own."""
        self.aug, self.ops, self.time_unit = aug, ops, time_unit
        self.embedding_columns = embedding_columns
        self.units_per_db = None if units_per_db is None else torch.as_tensor(units_per_db, dtype=torch.float32)
        self.background, self.chunks = background, chunks

    @property
    def enabled(self) -> bool:
        a = self.aug
        return bool(a.data_augmentation and (a.augment_add_noise or a.augment_spec_augment or a.augment_mixup
                                             or a.augment_gain or a.augment_cutmix
                                             or (a.augment_background and self.background is not None)
                                             or (a.augment_soundscape_mix and self.chunks is not None)))

    def _chosen(self, b: int, prob: float, device: torch.device) -> torch.Tensor:
        """(b, 1, 1, 1) boolean: which examples of the batch get an augmentation. Drawn and used on the device as a
        mask (``torch.where``), never turned into indices: ``nonzero`` or a count would make the host wait for the
        device at every step."""
        return (torch.rand(b, device=device) < prob).view(b, 1, 1, 1)

    def _forget_embedding(self, y: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """``y`` with the teacher-embedding columns of the ``chosen`` (mixed) rows set to NaN."""
        d = self.embedding_columns
        if not d:
            return y
        tail = torch.where(chosen.view(-1, 1), torch.full_like(y[:, -d:], float("nan")), y[:, -d:])
        return torch.cat([y[:, :-d], tail], dim=1)

    def _units(self, device: torch.device) -> torch.Tensor:
        """``units_per_db`` as (1, 1, n_mels, 1) on ``device``, copied there once."""
        if self.units_per_db.device != device:
            self.units_per_db = self.units_per_db.to(device)
        return self.units_per_db.view(1, 1, -1, 1)

    def cutmix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a ``cutmix_prob`` share of the batch, a random time span (up to ``cutmix_max_fraction`` of the
        window) comes from a shuffled partner; targets mix by the share of time each contributes."""
        b, frames = x.shape[0], x.shape[3]
        if b < 2:
            return x, y
        chosen = self._chosen(b, self.aug.cutmix_prob, x.device)
        partner = torch.randperm(b, device=x.device)
        width = (torch.rand(b, device=x.device) * self.aug.cutmix_max_fraction * frames).long()
        start = (torch.rand(b, device=x.device) * (frames - width + 1)).long()
        pos = torch.arange(frames, device=x.device).view(1, -1)
        span = (pos >= start[:, None]) & (pos < (start + width)[:, None])  # (b, frames)
        x = torch.where(chosen & span.view(b, 1, 1, frames), x[partner], x)
        share = (width.float() / frames).view(-1, 1)
        mixed = (1 - share) * torch.nan_to_num(y) + share * torch.nan_to_num(y[partner])
        return x, self._forget_embedding(torch.where(chosen.view(b, 1), mixed, y), chosen)

    def overlay_background(self, x: torch.Tensor) -> torch.Tensor:
        """For a ``background_prob`` share of the batch, overlay (element-wise max, i.e. the sounds added) a
        background window attenuated by 0..``background_gain_db`` dB; targets are unchanged."""
        if self.background is None:
            return x
        b = x.shape[0]
        chosen = self._chosen(b, self.aug.background_prob, x.device)
        bg = self.background(b)
        if x.device.type == "cuda":  # page-locked, so the copy does not wait for the device
            bg = bg.pin_memory()
        bg = bg.to(x.device, dtype=x.dtype, non_blocking=True)
        if self.units_per_db is not None and self.aug.background_gain_db > 0:
            db = -torch.rand(b, 1, 1, 1, device=x.device) * self.aug.background_gain_db
            bg = bg + db * self._units(x.device)
        return torch.where(chosen, torch.maximum(x, bg), x)

    def mix_soundscape_chunks(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a ``soundscape_mix_prob`` share of the batch, the example and a soundscape chunk with labels blended
        at ``soundscape_mix_weight`` (the chunk's share); the chunk's targets, scaled so that they add at most
        ``soundscape_mix_cap`` in sum, join the example's by their max (a masked label stays masked). With
        distillation targets (labels then teacher), only the labels take the chunk's."""
        if self.chunks is None:
            return x, y
        b = x.shape[0]
        chosen = self._chosen(b, self.aug.soundscape_mix_prob, x.device)
        cx, cy = self.chunks(b)
        cx = cx.to(x.device, dtype=x.dtype, non_blocking=True)
        cy = torch.nan_to_num(cy.to(y.device, dtype=y.dtype, non_blocking=True))
        units = self._units(x.device) if self.units_per_db is not None else None
        mixed_x = self.ops.blend(x, cx, self.aug.soundscape_mix_weight, units)
        added = cy * (self.aug.soundscape_mix_cap / cy.sum(dim=1, keepdim=True).clamp(min=1e-8)).clamp(max=1.0)
        labels = y[:, :cy.shape[1]]
        mixed_labels = torch.where(torch.isnan(labels), labels, torch.maximum(labels, added))
        mixed_y = torch.cat([mixed_labels, y[:, cy.shape[1]:]], dim=1)
        return torch.where(chosen, mixed_x, x), self._forget_embedding(torch.where(chosen.view(b, 1), mixed_y, y),
                                                                        chosen)

    def gain(self, x: torch.Tensor) -> torch.Tensor:
        """Random level change of ±``gain_db`` per example (in place): the absolute-dB front end keeps recording
        level, so without this a model learns the level of its training recordings."""
        if self.units_per_db is None or self.aug.gain_db <= 0:
            return x
        db = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) * 2 - 1) * self.aug.gain_db
        return x.add_(db * self._units(x.device))

    def spec_augment(self, x: torch.Tensor) -> torch.Tensor:
        """SpecAugment-style masks of the input kind (one pass, in place)."""
        return self.ops.mask(x, self.aug, self.time_unit)

    def mixup(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix a shuffled partner into a random ``mixup_prob`` share of the batch: ``mixup_kind = overlay`` (below) or
        ``beta`` (mixup: ``λ a + (1 - λ) b`` with ``λ ~ Beta(α, α)``, kept ≥ 0.5, targets mixed alike).

        On (standardised) dB mels the max of two spectrograms approximates the spectrogram of the two sounds
        added together (within 3 dB), so both calls stay at their own level, unlike a linear blend that
        weakens both; the targets become the union (max), as in soundscapes where species overlap.
        The other examples are left exactly as they were.
        """
        b = x.shape[0]
        if b < 2:
            return x, y
        chosen = self._chosen(b, self.aug.mixup_prob, x.device)
        partner = torch.randperm(b, device=x.device)
        if self.aug.mixup_kind == "beta":  # mixup: a convex mix, targets mixed alike (auto, unresolved: overlay)
            alpha = torch.full((b,), self.aug.mixup_alpha, device=x.device)
            lam = torch.distributions.Beta(alpha, alpha).sample()
            lam = torch.maximum(lam, 1 - lam)  # the chosen example stays the larger part
            mixed_x = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[partner]
            mixed_y = lam.view(-1, 1) * torch.nan_to_num(y) + (1 - lam.view(-1, 1)) * torch.nan_to_num(y[partner])
        else:
            mixed_x = self.ops.overlay(x, x[partner])
            mixed_y = torch.fmax(y, y[partner])  # fmax: a masked (NaN) label takes the partner's value
        return torch.where(chosen, mixed_x, x), self._forget_embedding(torch.where(chosen.view(b, 1), mixed_y, y),
                                                                        chosen)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented ``(x, y)``; ``x`` (a fresh batch) may be modified in place. Nothing here waits for the device
        (no ``nonzero``, ``item`` or host copies), so on a GPU the next batch is prepared while this one computes."""
        if not self.enabled:
            return x, y
        if self.aug.augment_gain:
            x = self.gain(x)
        if self.aug.augment_soundscape_mix and self.aug.soundscape_mix_prob > 0:
            x, y = self.mix_soundscape_chunks(x, y)
        if self.aug.augment_mixup and self.aug.mixup_prob > 0:
            x, y = self.mixup(x, y)
        if self.aug.augment_cutmix and self.aug.cutmix_prob > 0:
            x, y = self.cutmix(x, y)
        if self.aug.augment_background and self.aug.background_prob > 0:
            x = self.overlay_background(x)
        if self.aug.augment_add_noise and self.aug.noise_std > 0:
            x = self.ops.add_noise(x, self.aug.noise_std)
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


class ChunkBank:
    """``bank(n)``: n random items (windows (n, 1, n_mels, frames), targets (n, classes)) of a dataset of soundscape
    windows with labels (a :class:`dataloader.dataset.WindowDataset` at their fixed starts)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` items drawn with replacement."""
        items = [self.dataset[int(i)] for i in torch.randint(0, len(self.dataset), (n,))]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    def __call__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.draw(n)


class BackgroundBank(ChunkBank):
    """``bank(n)``: n random standardised windows (n, 1, n_mels, frames) from a dataset of background recordings
    (e.g. a :class:`dataloader.dataset.WindowDataset` over cached unlabeled soundscapes)."""

    def __call__(self, n: int) -> torch.Tensor:  # type: ignore[override]
        return self.draw(n)[0]
