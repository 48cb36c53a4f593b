"""Optimizer registry: ``create_optimizer(name, model, lr, weight_decay, head_lr_scale)``, ``list_optimizers()``.

Weight decay is not applied to norms and biases (1-d parameters), as timm does. With ``head_lr_scale`` != 1
the classifier head (timm's ``get_classifier()``, or a SED head) gets ``lr * head_lr_scale`` and the backbone
``lr``: a new head usually wants a larger step than pretrained features.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from utils.config_schema import AgentConfig
from utils.registry import Registry

OPTIMIZERS = Registry("optimizer")


def head_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters of ``model``'s classification head (empty when it has none that can be found)."""
    head = None
    if hasattr(model, "head_module"):
        head = model.head_module()
    elif hasattr(model, "get_classifier"):
        head = model.get_classifier()
    return {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()


def param_groups(model: nn.Module, weight_decay: float, lr: float, head_lr_scale: float = 1.0
                 ) -> list[dict[str, Any]]:
    """Up to four groups: (backbone | head) x (decayed weights | norms and biases without decay)."""
    head = head_parameters(model) if head_lr_scale != 1.0 else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in head, p.ndim <= 1), []).append(p)
    return [{"params": params, "weight_decay": 0.0 if no_decay else weight_decay,
             "lr": lr * (head_lr_scale if is_head else 1.0), "name": f"{'head' if is_head else 'backbone'}"
             f"{'_no_decay' if no_decay else ''}"}
            for (is_head, no_decay), params in sorted(groups.items())]


@OPTIMIZERS.register("adam")
def _adam(params: list[dict[str, Any]], lr: float, fused: bool = False) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


@OPTIMIZERS.register("adamw")
def _adamw(params: list[dict[str, Any]], lr: float, fused: bool = False) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, fused=fused or None)


@OPTIMIZERS.register("radam")
def _radam(params: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:  # no fused kernel: no `fused`
    return torch.optim.RAdam(params, lr=lr, decoupled_weight_decay=True)


@OPTIMIZERS.register("sgd")
def _sgd(params: list[dict[str, Any]], lr: float, fused: bool = False) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, fused=fused or None)


@OPTIMIZERS.register("lamb")
def _lamb(params: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:  # no fused kernel
    from timm.optim import Lamb  # noqa: PLC0415 - timm's LAMB (layer-wise adaptive large-batch optimizer)

    return Lamb(params, lr=lr)


def create_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float = 0.0,
                     head_lr_scale: float = 1.0, layer_lr_decay: float = 1.0, fused: bool = False
                     ) -> torch.optim.Optimizer:
    """Build the optimizer ``name`` over ``model``'s parameters; ``layer_lr_decay`` < 1 gives a transformer's
    lower layers smaller learning rates (Wav2Vec2 models). ``fused`` (training on CUDA): the single-kernel
    implementation where the optimizer has one (adam, adamw, sgd), one launch per step instead of one per tensor
    group."""
    if layer_lr_decay != 1.0:
        if not hasattr(model, "layerwise_param_groups"):
            raise ValueError("layer_lr_decay applies to transformer (Wav2Vec2) models; keep it 1.0 for CNNs")
        groups = model.layerwise_param_groups(lr, weight_decay, layer_lr_decay, head_lr_scale)
    else:
        groups = param_groups(model, weight_decay, lr, head_lr_scale)
    return OPTIMIZERS.create_from(name, {"fused": fused}, params=groups, lr=lr)  # no fused kernel: not passed


def optimizer_kwargs(agent: AgentConfig) -> dict[str, Any]:
    """``create_optimizer`` keywords from the ``[agent]`` section (the name included)."""
    return {"name": agent.optimizer, "lr": agent.lr_warmup_end, "weight_decay": agent.weight_decay,
            "head_lr_scale": agent.head_lr_scale, "layer_lr_decay": agent.layer_lr_decay}


def list_optimizers() -> list[str]:
    """Every registered optimizer name."""
    return OPTIMIZERS.names()
