"""Model factory: any timm CNN with ``in_chans=1`` and a new head; pretrained weights found offline.

Where pretrained weights come from, in order: ``pretrained_path`` (a local ``.safetensors``/``.pth``/``.bin``
file or a folder holding one, the way Kaggle notebooks run offline), the timm/Hugging Face cache, the hub
(only when it answers). ``transfer_learning = true`` insists and fails at once when none has them;
``auto`` warns loudly and starts from random weights.
"""
from __future__ import annotations

import difflib
import logging
from typing import Optional

import timm
import torch
import torch.nn.functional as F
from torch import nn

import factory.tiny  # noqa: F401 - registers tiny_dscnn with timm
from factory.pretrained import PretrainedWeightsError, cached_weights, hub_reachable, local_weights

log = logging.getLogger(__name__)

def _timm_model(name: str, transfer_learning: str, pretrained_path: str, **kwargs) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` with pretrained weights found as the module docstring says."""
    if transfer_learning == "false" and not pretrained_path:
        return timm.create_model(name, pretrained=False, **kwargs)
    if not pretrained_path and timm.models.get_pretrained_cfg(name) is None:  # e.g. tiny_dscnn: none exist
        if transfer_learning == "true":
            raise PretrainedWeightsError(f"{name} has no pretrained weights; set [model] transfer_learning = false")
        log.info("%s has no pretrained weights: random initialisation", name)
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained_path:
        source = local_weights(pretrained_path)
    else:
        source = cached_weights(name)
    if source is not None:
        log.info("pretrained weights for %s from %s", name, source)
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(source)}, **kwargs)
    if hub_reachable():
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any hub failure is handled the same way below
            problem = f"download from the hub failed: {exc}"
    else:
        problem = "not in the timm/Hugging Face cache and the hub is unreachable (offline)"
    message = (f"pretrained weights for {name}: {problem}. Attach them as a local file and set "
               f"[model] pretrained_path, or set [model] transfer_learning = false")
    if transfer_learning == "true":
        raise PretrainedWeightsError(message)
    log.warning("!! %s -- training starts from RANDOM weights (transfer_learning = auto)", message)
    return timm.create_model(name, pretrained=False, **kwargs)


class RepeatChannels(nn.Module):
    """Feeds a 1-channel mel to a model built for ``channels`` inputs by repeating it (``in_chans = 3``)."""

    def __init__(self, model: nn.Module, channels: int):
        super().__init__()
        self.model, self.channels = model, channels

    def get_classifier(self) -> nn.Module:
        return self.model.head_module() if hasattr(self.model, "head_module") else self.model.get_classifier()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x.expand(-1, self.channels, -1, -1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.model.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.expand(-1, self.channels, -1, -1))


class AttentionPool(nn.Module):
    """Frame-wise logits and attention pooling over time (the head of PANNs and of the BirdCLEF SED models)."""

    def __init__(self, channels: int, num_classes: int, drop_rate: float):
        super().__init__()
        self.fc = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(channels, channels), nn.ReLU(), nn.Dropout(drop_rate))
        self.att = nn.Conv1d(channels, num_classes, 1)
        self.cla = nn.Conv1d(channels, num_classes, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T) -> (clip logits (B, classes), frame logits (B, classes, T))."""
        x = F.max_pool1d(features, 3, 1, 1) + F.avg_pool1d(features, 3, 1, 1)  # smooth over neighbouring frames
        x = self.fc(x.transpose(1, 2)).transpose(1, 2)
        weights = torch.softmax(torch.tanh(self.att(x)), dim=-1)
        frames = self.cla(x)
        return (weights * frames).sum(dim=-1), frames


class SEDModel(nn.Module):
    """Sound event detection: any timm CNN trunk, frequency pooled away, an :class:`AttentionPool` over time.
    ``forward`` gives clip logits (so it trains and predicts like any classifier); ``forward_frames`` the
    frame-wise logits (B, classes, frames / stride) for event-level outputs."""

    def __init__(self, backbone: nn.Module, num_classes: int, drop_rate: float, event_bins: int = 0):
        super().__init__()
        self.backbone = backbone
        self.head = AttentionPool(backbone.num_features, num_classes, drop_rate)
        self.event_bins = event_bins  # > 0: forward gives frame logits averaged into event_bins, flattened

    def head_module(self) -> nn.Module:
        return self.head

    def get_classifier(self) -> nn.Module:
        return self.head

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(x)  # (B, C, F', T')
        return features.mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip logits (B, classes); with ``event_bins``, frame logits per bin (B, classes * event_bins), class-major,
        so losses, metrics and exports treat them as ordinary outputs."""
        clip, frames = self.head(self._pooled(x))
        if not self.event_bins:
            return clip
        return F.adaptive_avg_pool1d(frames, self.event_bins).flatten(1)

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._pooled(x))[1]


def create_model(name: str, num_classes: int, in_chans: int = 1, transfer_learning: str = "false",
                 pretrained_path: str = "", drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 head: str = "linear", event_bins: int = 0) -> nn.Module:
    """A timm model ``name`` with a ``num_classes`` head: ``linear`` (timm's own classifier, replaced) or
    ``sed`` (:class:`SEDModel`; with ``event_bins`` it outputs per-bin frame logits, ``classes * event_bins``),
    taking a 1-channel mel (``in_chans = 3`` repeats it for a 3-channel stem).

    ``transfer_learning``: ``"true"`` (fail fast without weights), ``"auto"`` (warn and go on), ``"false"``.
    The ImageNet stem is adapted to ``in_chans`` and the classifier replaced, by timm's own loader.
    """
    if head not in ("linear", "sed"):
        raise ValueError(f"unknown head {head!r}; available: linear, sed")
    if event_bins and head != "sed":
        raise ValueError("event_bins needs head = sed (frame-wise outputs)")
    if head == "sed":
        backbone = _timm_model(name, transfer_learning, pretrained_path, num_classes=0, global_pool="",
                               in_chans=in_chans, drop_path_rate=drop_path_rate)
        model: nn.Module = SEDModel(backbone, num_classes, drop_rate, event_bins)
    else:
        model = _timm_model(name, transfer_learning, pretrained_path, num_classes=num_classes, in_chans=in_chans,
                            drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    return RepeatChannels(model, in_chans) if in_chans > 1 else model


def timm_model_problem(name: str) -> Optional[str]:
    """Why ``name`` is not a timm architecture (with the closest names), or None when it is one."""
    if not name:
        return "an empty model name is not allowed; any name of timm.list_models(), e.g. efficientnet_b0"
    if timm.is_model(name):
        return None
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"not a timm model name; allowed: any name of timm.list_models() (e.g. efficientnet_b0).{hint}"


def list_models(pattern: str = "") -> list[str]:
    """Model names ``create_model`` accepts: every timm model (optionally filtered by a glob pattern)."""
    return timm.list_models(pattern or "*")
