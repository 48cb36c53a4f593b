"""Model families as a registry: each knows its input kind, how to build itself from ``[model]`` and how to rebuild
a trained model from a checkpoint.

    @register_family("my_family")
    class MyFamily(ModelFamily):
        input_kind = "mel"
        def build(self, name, num_classes, model, event_bins): ...
        def rebuild(self, name, num_outputs, kwargs): ...

is all a new family needs: ``[model] family = my_family`` then trains, checkpoints, predicts and exports through
the same code as the shipped ``cnn`` (timm on mels), ``wav2vec2`` (transformers on 16 kHz waveforms) and ``tiny``
(the microcontroller CNN) and ``embedding`` (a head on BirdNET / Perch embeddings). transformers is imported only
when a Wav2Vec2 model is built, an embedding model's runtime only when one is loaded.
"""
from __future__ import annotations

import abc
from typing import Any, Optional

from torch import nn

from dataloader.features import FrontEnd, WaveformSettings, make_frontend
from factory.embedding_head import EmbeddingHead
from factory.models import create_model, timm_model_problem
from utils.checkpoints import ModelMeta
from utils.config_schema import Config, ModelConfig
from utils.registry import Registry

FAMILIES = Registry("model family")


def register_family(name: str):
    """Class decorator: ``[model] family = name`` builds with this :class:`ModelFamily`."""
    def add(cls: type["ModelFamily"]) -> type["ModelFamily"]:
        cls.name = name
        return FAMILIES.register(name, input_kind=cls.input_kind)(cls)
    return add


class ModelFamily(abc.ABC):
    """What the pipeline needs to know about a kind of model."""

    name: str = ""
    input_kind: str = "mel"  # a registered input kind of dataloader.features (mel | waveform)
    channels_last: bool = True  # train and run in channels_last (CNNs); off for sequence models
    uses_testing_model: bool = False  # testing mode swaps in [testing] testing_model
    layer_lr_decay: bool = False  # supports [agent] layer_lr_decay
    heads: tuple[str, ...] = ("linear", "sed")  # the [model] head values it builds

    def input_settings(self, cfg: Config) -> Any:
        """The front-end settings this family's models take (``[data_process]`` for mel families)."""
        return cfg.data_process

    def check_type(self, name: str) -> Optional[str]:
        """Why ``[model] type = name`` cannot be built by this family (checked at config load), or None."""
        return None

    def model_name(self, cfg: Config) -> str:
        """The model this run builds: ``[model] type``, or ``[testing] testing_model`` in testing mode."""
        return cfg.testing.testing_model if cfg.testing.testing and self.uses_testing_model else cfg.model.type

    @abc.abstractmethod
    def build(self, name: str, num_classes: int, model: ModelConfig, event_bins: int = 0
              ) -> tuple[nn.Module, dict[str, Any]]:
        """(a new network with ``num_classes`` outputs (× ``event_bins`` for frame-level events), the plain-data
        keyword arguments :meth:`rebuild` needs, stored in checkpoints)."""

    @abc.abstractmethod
    def rebuild(self, name: str, num_outputs: int, kwargs: dict[str, Any]) -> nn.Module:
        """The architecture of a trained model (no pretrained weights fetched) with ``num_outputs`` outputs."""


@register_family("cnn")
class CnnFamily(ModelFamily):
    """Any timm CNN on dB mels, with a linear or SED head (:func:`factory.models.create_model`)."""

    uses_testing_model = True

    def check_type(self, name: str) -> Optional[str]:
        return timm_model_problem(name)

    def build(self, name: str, num_classes: int, model: ModelConfig, event_bins: int = 0
              ) -> tuple[nn.Module, dict[str, Any]]:
        kwargs: dict[str, Any] = {"head": model.head, "in_chans": model.in_chans}
        if event_bins:
            kwargs["event_bins"] = event_bins
        network = create_model(name, num_classes=num_classes, transfer_learning=model.transfer_learning,
                               pretrained_path=model.pretrained_path, drop_rate=model.drop_rate,
                               drop_path_rate=model.drop_path_rate, **kwargs)
        return network, kwargs

    def rebuild(self, name: str, num_outputs: int, kwargs: dict[str, Any]) -> nn.Module:
        classes = num_outputs // max(1, kwargs.get("event_bins", 0))  # events: the outputs are class@bin
        return create_model(name, num_classes=classes, **kwargs)


@register_family("tiny")
class TinyFamily(CnnFamily):
    """The depthwise-separable microcontroller CNN (``tiny_dscnn``, ~13 k parameters, no pretrained weights),
    whatever ``[model] type`` says; testing mode keeps it."""

    uses_testing_model = False

    def check_type(self, name: str) -> Optional[str]:
        return None

    def model_name(self, cfg: Config) -> str:
        return "tiny_dscnn"

    def build(self, name: str, num_classes: int, model: ModelConfig, event_bins: int = 0
              ) -> tuple[nn.Module, dict[str, Any]]:
        settings = ModelConfig(**{**vars(model), "transfer_learning": "false", "pretrained_path": ""})
        return super().build("tiny_dscnn", num_classes, settings, event_bins)


@register_family("wav2vec2")
class Wav2Vec2Family(ModelFamily):
    """A transformers Wav2Vec2 sequence classifier on raw 16 kHz waveforms (:mod:`factory.wav2vec2`)."""

    input_kind, channels_last, layer_lr_decay = "waveform", False, True
    heads = ("linear",)

    def input_settings(self, cfg: Config) -> WaveformSettings:
        from factory.wav2vec2 import SAMPLE_RATE  # noqa: PLC0415

        return WaveformSettings(SAMPLE_RATE, cfg.data_process.mode, cfg.data_process.max_length_s)

    def build(self, name: str, num_classes: int, model: ModelConfig, event_bins: int = 0
              ) -> tuple[nn.Module, dict[str, Any]]:
        from factory.wav2vec2 import create_wav2vec2  # noqa: PLC0415

        network = create_wav2vec2(name, num_classes, model.transfer_learning, model.pretrained_path,
                                  model.freeze_feature_encoder)
        return network, {"hf_config": network.hf.config.to_dict()}

    def rebuild(self, name: str, num_outputs: int, kwargs: dict[str, Any]) -> nn.Module:
        from factory.wav2vec2 import create_wav2vec2  # noqa: PLC0415

        return create_wav2vec2(name, num_outputs, hf_config=kwargs["hf_config"], freeze_feature_encoder=False)


@register_family("embedding")
class EmbeddingFamily(ModelFamily):
    """A linear or MLP head (``[model] head``) on a foundation model's embeddings: ``[model] type`` names the
    embedding model (``birdnet``, ``perch``, ``onnx``), ``[model] pretrained_path`` its file when it is not
    installed; the embeddings are cached per 5-s row like mels."""

    input_kind, channels_last = "embedding", False
    heads = ("linear", "mlp")

    def input_settings(self, cfg: Config) -> Any:
        from dataloader.embedding_input import embedding_settings  # noqa: PLC0415 - the model's runtime, when used

        return embedding_settings(cfg.model.type, cfg.model.pretrained_path, cfg.data.window_s, cfg.data_process.mode,
                                  cfg.data_process.max_length_s)

    def check_type(self, name: str) -> Optional[str]:
        from dataloader.embedders import list_embedders  # noqa: PLC0415

        known = list_embedders()
        return None if name in known else f"not an embedding model; allowed: {', '.join(known)}"

    def build(self, name: str, num_classes: int, model: ModelConfig, event_bins: int = 0
              ) -> tuple[nn.Module, dict[str, Any]]:
        from dataloader.embedding_input import cached_embedder  # noqa: PLC0415

        if event_bins:
            raise ValueError("an embedding head gives one output per 5-s row; frame-level events need the cnn family")
        dim = cached_embedder(name, model.pretrained_path).dim
        return EmbeddingHead(dim, num_classes, model.head, model.drop_rate), {"dim": dim, "head": model.head}

    def rebuild(self, name: str, num_outputs: int, kwargs: dict[str, Any]) -> nn.Module:
        return EmbeddingHead(kwargs["dim"], num_outputs, kwargs["head"])


def get_family(name: str) -> ModelFamily:
    """The registered family ``name`` (an unknown name lists the known ones)."""
    return FAMILIES.create(name)


def list_families() -> list[str]:
    """Every registered model family."""
    return FAMILIES.names()


def run_frontend(cfg: Config) -> FrontEnd:
    """The front end of this run: the settings and input kind of ``[model] family``."""
    family = get_family(cfg.model.family)
    return make_frontend(family.input_settings(cfg), family.input_kind)


def build_model(cfg: Config, num_classes: int, event_bins: int = 0) -> tuple[nn.Module, dict[str, Any], str]:
    """(network, checkpoint ``model_kwargs`` (with its ``family``), model name) for this run's ``[model]``."""
    family = get_family(cfg.model.family)
    name = family.model_name(cfg)
    network, kwargs = family.build(name, num_classes, cfg.model, event_bins)
    return network, {"family": family.name, **kwargs}, name


def model_from_checkpoint(payload: dict) -> nn.Module:
    """The trained network of a checkpoint payload (its family's :meth:`~ModelFamily.rebuild` from ``model_name``
    and ``model_kwargs``; checkpoints without a ``family`` are ``cnn``), with its weights loaded."""
    meta = ModelMeta.from_payload(payload)
    kwargs = dict(meta.model_kwargs)
    family = get_family(kwargs.pop("family", "cnn"))
    model = family.rebuild(meta.model_name, len(meta.labels), kwargs)
    model.load_state_dict(payload["model"])
    return model
