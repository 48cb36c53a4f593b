"""Factories: timm models with in_chans=1, pretrained weights from local files, offline failure, registries."""
from __future__ import annotations

import logging
import time

import pytest
import torch

from factory.losses import create_loss, list_losses
from factory.models import create_model
from factory.optimizers import create_optimizer, list_optimizers
from factory.pretrained import PretrainedWeightsError
from factory.schedulers import create_scheduler, list_schedulers

NAME = "mobilenetv3_small_050"


def test_any_timm_model_with_one_input_channel_and_a_new_head():
    for name in (NAME, "resnet10t"):
        model = create_model(name, num_classes=7, in_chans=1).eval()
        assert model(torch.randn(2, 1, 64, 160)).shape == (2, 7)


def imagenet_state(name: str) -> dict:
    """What a downloaded ImageNet checkpoint holds (3-channel stem, 1000-class head), made here offline."""
    import timm

    return {k: v.clone() for k, v in timm.create_model(name, num_classes=1000).state_dict().items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_weights_from_a_local_file_adapt_stem_and_replace_head(tmp_path, suffix):
    state = imagenet_state(NAME)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    model = create_model(NAME, num_classes=5, in_chans=1, transfer_learning="true", pretrained_path=str(path))
    got = model.state_dict()
    stem = "conv_stem.weight"
    torch.testing.assert_close(got[stem], state[stem].sum(dim=1, keepdim=True))  # timm sums RGB filters
    inner = [k for k in state if k.startswith("blocks.") and k.endswith("weight")][3]
    torch.testing.assert_close(got[inner], state[inner])
    assert got["classifier.weight"].shape[0] == 5


def test_missing_local_weights_file_fails(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        create_model(NAME, 3, transfer_learning="auto", pretrained_path=str(tmp_path / "absent.pth"))


def test_transfer_learning_true_fails_fast_offline():
    t0 = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match="pretrained_path"):
        create_model(NAME, 3, transfer_learning="true")
    assert time.perf_counter() - t0 < 10, "must not hang on hub retries"


def test_transfer_learning_auto_warns_and_goes_on(caplog):
    with caplog.at_level(logging.WARNING):
        model = create_model(NAME, 3, transfer_learning="auto")
    assert "RANDOM weights" in caplog.text and model is not None


def test_registries_list_and_build():
    assert "bce" in list_losses() and {"adam", "adamw"} <= set(list_optimizers())
    assert {"cosine", "exponential"} <= set(list_schedulers())
    loss = create_loss("bce")
    assert loss(torch.zeros(2, 3), torch.ones(2, 3)).item() == pytest.approx(0.6931, abs=1e-4)
    with pytest.raises(KeyError, match="available"):
        create_loss("nope")


def test_norms_and_biases_get_no_weight_decay():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    opt = create_optimizer("adamw", model, lr=1e-3, weight_decay=0.05)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.05 and all(p.ndim > 1 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3


def lrs(name: str, steps: int, **kw) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=kw["lr_peak"])
    sched = create_scheduler(name, opt, total_steps=steps, **kw)
    out = []
    for _ in range(steps + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_warms_up_linearly_then_decays_to_lr_end():
    seq = lrs("cosine", 100, warmup_steps=10, lr_start=1e-4, lr_peak=1e-3, lr_end=1e-5, steps_per_epoch=10, gamma=0.9)
    assert seq[0] == pytest.approx(1e-4) and seq[5] == pytest.approx(5.5e-4) and seq[10] == pytest.approx(1e-3)
    assert seq[55] == pytest.approx((1e-3 + 1e-5) / 2) and seq[100] == pytest.approx(1e-5)


def test_exponential_decays_by_gamma_per_epoch():
    seq = lrs("exponential", 30, steps_per_epoch=10, gamma=0.5, lr_peak=1e-3, warmup_steps=0, lr_start=0, lr_end=0)
    assert seq[0] == pytest.approx(1e-3) and seq[10] == pytest.approx(5e-4) and seq[20] == pytest.approx(2.5e-4)


def test_sed_head_gives_clip_and_frame_logits_on_a_pretrained_trunk(tmp_path):
    state = imagenet_state(NAME)
    torch.save(state, tmp_path / "w.pth")
    model = create_model(NAME, num_classes=4, head="sed", transfer_learning="true",
                         pretrained_path=str(tmp_path / "w.pth")).eval()
    x = torch.randn(2, 1, 128, 320)
    clip, frames = model(x), model.forward_frames(x)
    assert clip.shape == (2, 4) and frames.shape[:2] == (2, 4) and frames.shape[2] == 320 // 32
    torch.testing.assert_close(model.backbone.state_dict()["conv_stem.weight"],
                               state["conv_stem.weight"].sum(dim=1, keepdim=True))
    assert {id(p) for p in model.get_classifier().parameters()} == {id(p) for p in model.head.parameters()}


def test_three_input_channels_repeat_the_mel_and_keep_the_rgb_stem(tmp_path):
    state = imagenet_state(NAME)
    torch.save(state, tmp_path / "w.pth")
    model = create_model(NAME, num_classes=4, in_chans=3, transfer_learning="true",
                         pretrained_path=str(tmp_path / "w.pth")).eval()
    torch.testing.assert_close(model.model.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
    x = torch.randn(2, 1, 64, 96)
    torch.testing.assert_close(model(x), model.model(x.repeat(1, 3, 1, 1)))


def test_registries_refuse_a_setting_they_do_not_take_by_name():
    from factory.losses import LOSSES, create_loss, loss_kwargs
    from factory.optimizers import OPTIMIZERS, create_optimizer, optimizer_kwargs
    from factory.schedulers import SCHEDULERS, create_scheduler, scheduler_kwargs
    from utils.config_schema import AgentConfig
    from utils.registry import RegistryError

    for registry in (LOSSES, OPTIMIZERS, SCHEDULERS):  # every entry declares what it accepts (no **kwargs sink)
        assert all(registry.accepts(name) is not None for name in registry.names()), registry.kind
    with pytest.raises(RegistryError, match="no loss takes focal_gama; the loss settings are: .*focal_gamma"):
        create_loss("focal", focal_gama=3.0)  # misspelled
    with pytest.raises(RegistryError, match="loss 'bce' does not take focal_gamma; it takes: class_weights, "
                                            "label_smoothing"):
        LOSSES.create("bce", focal_gamma=2.0)
    assert create_loss("bce", focal_gamma=2.0).activation == "sigmoid"  # another loss's setting: not passed to bce
    model = torch.nn.Linear(4, 2)
    with pytest.raises(RegistryError, match="optimizer 'radam' does not take fused"):
        OPTIMIZERS.create("radam", params=model.parameters(), lr=0.1, fused=True)
    with pytest.raises(RegistryError, match="no optimizer takes fusd"):
        OPTIMIZERS.create_from("adamw", {"fusd": True}, params=model.parameters(), lr=0.1)
    opt = create_optimizer(model=model, **optimizer_kwargs(AgentConfig(optimizer="radam")))  # fused: not radam's
    with pytest.raises(RegistryError, match="no scheduler takes gama"):
        create_scheduler("exponential", opt, steps_per_epoch=2, gama=0.9)
    with pytest.raises(RegistryError, match="scheduler 'step' does not take gamma"):
        SCHEDULERS.create("step", optimizer=opt, steps_per_epoch=2, gamma=0.5)
    for name in LOSSES.names():  # the config's pools hold only settings some entry takes
        create_loss(name, **loss_kwargs(AgentConfig()))
    for name in SCHEDULERS.names():
        create_scheduler(optimizer=opt, **{**scheduler_kwargs(AgentConfig(), 4, 3), "name": name})
