"""Where pretrained weights come from, shared by every model family: a local file, the timm / Hugging Face cache,
or the hub when it answers; :class:`PretrainedWeightsError` when they were required and cannot be had."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import timm


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were required but cannot be had offline."""


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def local_weights(path: str) -> Path:
    """The weights file named by ``[model] pretrained_path`` (a file, or a folder holding one of WEIGHT_FILES)."""
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
