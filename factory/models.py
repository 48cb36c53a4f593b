"""Model factory: any timm CNN with ``in_chans=1`` and a new head; pretrained weights found offline.

Where pretrained weights come from, in order: ``pretrained_path`` (a local ``.safetensors``/``.pth``/``.bin``
file or a folder holding one, the way Kaggle notebooks run offline), the timm/Hugging Face cache, the hub
(only when it answers). ``transfer_learning = true`` insists and fails at once when none has them;
``auto`` warns loudly and starts from random weights.
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import timm
from torch import nn

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were required but cannot be had offline."""


def _local_weights(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        for name in WEIGHT_FILES:
            if (p / name).is_file():
                return p / name
        raise PretrainedWeightsError(f"[model] pretrained_path = {path}: folder holds none of {', '.join(WEIGHT_FILES)}")
    if not p.is_file():
        raise PretrainedWeightsError(f"[model] pretrained_path = {path}: no such file")
    return p


def cached_weights(name: str) -> Optional[Path]:
    """The model's default pretrained weights in the Hugging Face or torch-hub cache, if there."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

        repo = cfg.hf_hub_id.split("@")[0]
        for filename in ((cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else WEIGHT_FILES):
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                return Path(found)
    if cfg.url:
        import torch.hub  # noqa: PLC0415

        legacy = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if legacy.is_file():
            return legacy
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the hub's host does not answer within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def create_model(name: str, num_classes: int, in_chans: int = 1, transfer_learning: str = "false",
                 pretrained_path: str = "", drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    """A timm model ``name`` with ``in_chans`` inputs and a ``num_classes`` head.

    ``transfer_learning``: ``"true"`` (fail fast without weights), ``"auto"`` (warn and go on), ``"false"``.
    The ImageNet stem is adapted to ``in_chans`` and the classifier replaced, by timm's own loader.
    """
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if transfer_learning == "false" and not pretrained_path:
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained_path:
        source = _local_weights(pretrained_path)
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
