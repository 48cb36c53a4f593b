"""Wav2Vec2 on raw 16 kHz waveforms: local weights, offline errors, layer-wise LR, the waveform cache, end to end."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from factory.optimizers import create_optimizer  # noqa: E402
from factory.pretrained import PretrainedWeightsError  # noqa: E402
from factory.wav2vec2 import create_wav2vec2  # noqa: E402


def save_tiny_wav2vec2(folder):
    """A tiny Wav2Vec2 saved the way a Kaggle dataset ships one (save_pretrained folder); its feature encoder
    downsamples 320x as the real models' does (50 frames per second at 16 kHz: attention over 250 frames per 5-s
    window, not 4,000)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16, 16, 16), conv_kernel=(10, 4, 4, 4),
                         conv_stride=(5, 4, 4, 4), num_feat_extract_layers=4, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                         num_labels=7, classifier_proj_size=16)
    torch.manual_seed(0)
    Wav2Vec2ForSequenceClassification(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory):
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("tiny_w2v"))


def test_local_folder_weights_a_new_head_and_a_frozen_feature_encoder(tiny_w2v):
    from transformers import Wav2Vec2ForSequenceClassification

    saved = Wav2Vec2ForSequenceClassification.from_pretrained(tiny_w2v).state_dict()
    model = create_wav2vec2("facebook/wav2vec2-base", 4, "true", pretrained_path=str(tiny_w2v)).eval()
    got = model.hf.state_dict()
    key = "wav2vec2.encoder.layers.1.attention.k_proj.weight"
    torch.testing.assert_close(got[key], saved[key])  # pretrained body
    assert got["classifier.weight"].shape[0] == 4  # new head
    assert not any(p.requires_grad for p in model.hf.wav2vec2.feature_extractor.parameters())
    assert model(torch.randn(2, 1, 1, 16000)).shape == (2, 4)


def test_level_does_not_matter_each_window_is_normalised(tiny_w2v):
    model = create_wav2vec2("x", 3, "true", pretrained_path=str(tiny_w2v)).eval()
    x = torch.randn(2, 1, 1, 16000)
    torch.testing.assert_close(model(x), model(10 * x), atol=1e-4, rtol=1e-4)


def test_a_hub_name_offline_fails_at_once_or_warns_and_goes_on(monkeypatch, caplog):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match="pretrained_path"):
        create_wav2vec2("facebook/wav2vec2-base", 3, "true")
    assert time.perf_counter() - t0 < 20
    model = create_wav2vec2("facebook/wav2vec2-base", 3, "auto")
    assert "RANDOM weights" in caplog.text and model.hf.config.num_hidden_layers == 12


def test_layer_wise_learning_rates(tiny_w2v):
    model = create_wav2vec2("x", 3, "true", pretrained_path=str(tiny_w2v))
    opt = create_optimizer("adamw", model, lr=1e-3, weight_decay=0.01, head_lr_scale=10, layer_lr_decay=0.5)
    lr_of = {}
    for group in opt.param_groups:
        for p in group["params"]:
            lr_of[id(p)] = group["lr"]
    named = dict(model.named_parameters())
    assert lr_of[id(named["hf.classifier.weight"])] == pytest.approx(1e-2)
    assert lr_of[id(named["hf.wav2vec2.encoder.layers.1.attention.k_proj.weight"])] == pytest.approx(5e-4)
    assert lr_of[id(named["hf.wav2vec2.encoder.layers.0.attention.k_proj.weight"])] == pytest.approx(2.5e-4)
    assert lr_of[id(named["hf.wav2vec2.feature_projection.projection.weight"])] == pytest.approx(1.25e-4)
    with pytest.raises(ValueError, match="transformer"):
        create_optimizer("adamw", torch.nn.Linear(2, 2), lr=1e-3, layer_lr_decay=0.5)
