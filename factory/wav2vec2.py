"""Wav2Vec2 audio classifiers (Hugging Face transformers) on raw 16 kHz waveforms.

Where the network comes from, in order: ``pretrained_path`` or a ``type`` that is a local folder
(``save_pretrained`` output: ``config.json`` + weights; how a Kaggle notebook runs offline), then the hub name
in ``type`` (from the Hugging Face cache, or the hub when it answers). ``transfer_learning = true`` fails at
once when none has weights; ``auto`` warns and starts from random weights of the same architecture (or of
``wav2vec2-base``'s when even its config is unavailable). transformers is imported here only.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from factory.pretrained import PretrainedWeightsError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class Wav2Vec2Classifier(nn.Module):
    """(B, 1, 1, samples) or (B, samples) waveforms -> (B, classes) logits; each example is normalised to zero
    mean and unit variance first, as ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model

    def head_module(self) -> nn.Module:
        return nn.ModuleList([self.hf.projector, self.hf.classifier])

    def get_classifier(self) -> nn.Module:
        return self.head_module()

    def layerwise_param_groups(self, lr: float, weight_decay: float, decay: float, head_lr_scale: float = 1.0
                               ) -> list[dict[str, Any]]:
        """Optimizer groups with layer-wise learning-rate decay (:func:`layerwise_param_groups`)."""
        return layerwise_param_groups(self, lr, weight_decay, decay, head_lr_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wave = x.reshape(x.shape[0], -1).float()
        wave = (wave - wave.mean(dim=1, keepdim=True)) / torch.sqrt(wave.var(dim=1, keepdim=True) + 1e-7)
        return self.hf(input_values=wave).logits


def _hf_model(config: Any) -> nn.Module:
    from transformers import Wav2Vec2ForSequenceClassification  # noqa: PLC0415

    return Wav2Vec2ForSequenceClassification(config)


def create_wav2vec2(name_or_path: str, num_classes: int, transfer_learning: str = "false", pretrained_path: str = "",
                    freeze_feature_encoder: bool = True, hf_config: Optional[dict[str, Any]] = None) -> Wav2Vec2Classifier:
    """A Wav2Vec2 sequence classifier with a new ``num_classes`` head (see the module docstring for where the
    weights come from); ``hf_config`` (a saved ``config.to_dict()``) rebuilds a trained model's architecture."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification  # noqa: PLC0415

    if hf_config is not None:
        model = Wav2Vec2Classifier(_hf_model(Wav2Vec2Config.from_dict({**hf_config, "num_labels": num_classes})))
    else:
        local = Path(pretrained_path or name_or_path).expanduser()
        source = str(local) if (local / "config.json").is_file() else name_or_path
        if transfer_learning == "false":
            try:
                config = Wav2Vec2Config.from_pretrained(source)
            except OSError:
                config = Wav2Vec2Config()
            config.num_labels = num_classes
            model = Wav2Vec2Classifier(_hf_model(config))
        else:
            try:
                hf = Wav2Vec2ForSequenceClassification.from_pretrained(source, num_labels=num_classes,
                                                                       ignore_mismatched_sizes=True)
                log.info("pretrained Wav2Vec2 from %s", source)
                model = Wav2Vec2Classifier(hf)
            except OSError as exc:
                message = (f"pretrained Wav2Vec2 {source}: {str(exc).splitlines()[0]} Attach a save_pretrained "
                           f"folder and set [model] pretrained_path, or set [model] transfer_learning = false")
                if transfer_learning == "true":
                    raise PretrainedWeightsError(message) from None
                log.warning("!! %s -- training starts from RANDOM weights (transfer_learning = auto)", message)
                return create_wav2vec2(name_or_path, num_classes, "false", pretrained_path, freeze_feature_encoder)
    if freeze_feature_encoder:
        model.hf.freeze_feature_encoder()  # the CNN over raw samples: fine-tuning it rarely helps
    return model


def layerwise_param_groups(model: Wav2Vec2Classifier, lr: float, weight_decay: float, decay: float,
                           head_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Layer-wise learning-rate decay: the head at ``lr * head_lr_scale``, transformer layer i of L at
    ``lr * decay ** (L - i)``, everything below the layers (feature encoder, projection, positional
    convolution) at ``lr * decay ** (L + 1)``; no weight decay on norms and biases."""
    n_layers = model.hf.config.num_hidden_layers
    head = {id(p) for p in model.head_module().parameters()}
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in head:
            scale = head_lr_scale
        elif ".encoder.layers." in name:
            scale = decay ** (n_layers - int(name.split(".encoder.layers.")[1].split(".")[0]))
        elif ".encoder.layer_norm" in name:
            scale = 1.0
        else:
            scale = decay ** (n_layers + 1)
        groups.setdefault((scale, p.ndim <= 1), []).append(p)
    return [{"params": params, "lr": lr * scale, "weight_decay": 0.0 if no_decay else weight_decay,
             "name": f"lr_x{scale:.3g}{'_no_decay' if no_decay else ''}"}
            for (scale, no_decay), params in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1]))]
