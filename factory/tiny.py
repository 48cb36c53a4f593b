"""A tiny depthwise-separable CNN for microcontrollers (seed 002), registered in timm as ``tiny_dscnn``.

Seed 002 found, for a bird detector on an ESP32: global average pooling instead of flattening (1.5 M -> 200 k
parameters) and separable convolutions (200 k -> 8 k) at no visible loss. ``tiny_dscnn`` follows that: a strided
stem, four depthwise-separable blocks, global average pooling and one linear layer; ~13 k parameters for two
classes on a 40 x 100 mel. Every convolution is a Conv-BN-ReLU ``nn.Sequential`` so it can be fused for int8
quantization (post-training or quantization-aware) with ``torch.ao.quantization``.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.models import register_model
from torch import nn


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv2d (no bias) + BatchNorm2d + ReLU, fusable into one quantized op."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class TinyDSCNN(nn.Module):
    """Stem (3x3, stride 2) then depthwise-separable blocks (depthwise 3x3 + pointwise 1x1), global average
    pooling, dropout and a linear classifier. ``forward_features`` keeps the (B, C, F, T) map for an SED head."""

    def __init__(self, num_classes: int = 2, in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64, 64, 64),
                 strides: tuple[int, ...] = (2, 2, 1, 1), drop_rate: float = 0.0):
        super().__init__()
        layers = [conv_bn_relu(in_chans, widths[0], stride=2)]
        for c_in, c_out, stride in zip(widths[:-1], widths[1:], strides):
            layers += [conv_bn_relu(c_in, c_in, stride=stride, groups=c_in), conv_bn_relu(c_in, c_out, kernel=1)]
        self.features = nn.Sequential(*layers)
        self.num_features = widths[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.classifier = nn.Linear(widths[-1], num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """timm's convention: pooled features (``pre_logits``) or logits of a ``forward_features`` map."""
        x = torch.flatten(self.pool(x), 1)
        return x if pre_logits else self.classifier(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.features(x))

    def fuse_for_quantization(self) -> "TinyDSCNN":
        """Fuse every Conv-BN-ReLU in place (call in eval mode for post-training, train mode for QAT)."""
        fuse = (torch.ao.quantization.fuse_modules_qat if self.training else torch.ao.quantization.fuse_modules)
        for block in self.features:
            fuse(block, [["0", "1", "2"]], inplace=True)
        return self


@register_model
def tiny_dscnn(pretrained: bool = False, **kwargs: Any) -> TinyDSCNN:
    """timm entry point: ``timm.create_model("tiny_dscnn", num_classes=..., in_chans=..., drop_rate=...)``
    (no pretrained weights exist; timm's other arguments are accepted and ignored)."""
    if pretrained:
        raise ValueError("tiny_dscnn has no pretrained weights; set [model] transfer_learning = false")
    allowed = {"num_classes", "in_chans", "widths", "strides", "drop_rate"}
    return TinyDSCNN(**{k: v for k, v in kwargs.items() if k in allowed})


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
