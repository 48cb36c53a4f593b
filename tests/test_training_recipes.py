"""Losses against their formulas, optimizer groups, schedules, accumulation, clipping, sampling, exact resume."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from factory.losses import create_loss, list_losses
from factory.optimizers import create_optimizer, list_optimizers
from factory.schedulers import create_scheduler
from training.trainer import Trainer, TrainOptions


def test_focal_loss_matches_the_formula_and_torchvision():
    torchvision_ops = pytest.importorskip("torchvision.ops")
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]])
    targets = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0]])
    got = create_loss("focal", focal_gamma=2.0, focal_alpha=0.25)(logits, targets)
    assert got.item() == pytest.approx(torchvision_ops.sigmoid_focal_loss(logits, targets, 0.25, 2.0, "mean").item())
    p = 1 / (1 + math.exp(-2.0))  # one entry by hand: a positive at logit 2
    by_hand = -0.25 * (1 - p) ** 2 * math.log(p)
    single = create_loss("focal", focal_gamma=2.0, focal_alpha=0.25)(torch.tensor([[2.0]]), torch.tensor([[1.0]]))
    assert single.item() == pytest.approx(by_hand, rel=1e-6)
    assert create_loss("focal", focal_gamma=0.0, focal_alpha=-1)(logits, targets).item() == pytest.approx(
        nn.functional.binary_cross_entropy_with_logits(logits, targets).item(), rel=1e-6)  # γ=0, no α: BCE


def test_softmax_ce_uses_normalised_soft_targets_and_label_smoothing():
    logits = torch.tensor([[1.0, 2.0, 0.0]])
    targets = torch.tensor([[1.0, 0.5, 0.0]])
    q = targets / targets.sum()
    expected = -(q * torch.log_softmax(logits, 1)).sum()
    assert create_loss("ce")(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    eps = 0.1
    q_smooth = q * (1 - eps) + eps / 3
    assert create_loss("ce", label_smoothing=eps)(logits, targets).item() == pytest.approx(
        -(q_smooth * torch.log_softmax(logits, 1)).sum().item(), rel=1e-6)


def test_asl_reduces_to_bce_without_focusing_or_clip_and_bce_focal_adds_the_terms():
    logits, targets = torch.randn(4, 6), (torch.rand(4, 6) > 0.7).float()
    bce = nn.functional.binary_cross_entropy_with_logits(logits, targets).item()
    assert create_loss("asl", asl_gamma_pos=0, asl_gamma_neg=0, asl_clip=0)(logits, targets).item() == pytest.approx(
        bce, rel=1e-5)
    focal = create_loss("focal")(logits, targets).item()
    assert create_loss("bce_focal", focal_weight=2.0)(logits, targets).item() == pytest.approx(bce + 2 * focal, rel=1e-5)
    assert create_loss("asl")(logits, targets).item() < bce  # easy negatives discarded


@pytest.mark.parametrize("name", ["bce", "focal", "bce_focal", "asl"])
def test_masked_targets_leave_their_entries_out(name):
    logits = torch.randn(3, 4, requires_grad=True)
    targets = torch.tensor([[1.0, float("nan"), 0.0, 0.0], [0.0, 1.0, 0.0, float("nan")], [0.0, 0.0, 1.0, 0.0]])
    loss = create_loss(name)(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad[0, 1] == 0 and logits.grad[1, 3] == 0 and logits.grad[0, 0] != 0


def test_secondary_labels_weighted_or_masked():
    from dataloader.dataset import multi_hot

    table = pd.DataFrame({"primary_label": ["a"], "secondary_labels": [["b"]]})
    assert multi_hot(table, ["a", "b", "c"], 0.5).tolist() == [[1.0, 0.5, 0.0]]
    masked = multi_hot(table, ["a", "b", "c"], 0.5, "mask")
    assert masked[0, 0] == 1.0 and np.isnan(masked[0, 1]) and masked[0, 2] == 0.0


class Tiny(nn.Module):
    """A small CNN with a timm-like ``get_classifier``."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@pytest.mark.parametrize("name", ["adam", "adamw", "radam", "sgd", "lamb"])
def test_every_optimizer_steps_and_norms_and_biases_are_not_decayed(name):
    assert name in list_optimizers()
    model = Tiny()
    opt = create_optimizer(name, model, lr=1e-2, weight_decay=0.05, head_lr_scale=10.0)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["head"]["lr"] == pytest.approx(0.1) and groups["backbone"]["lr"] == pytest.approx(0.01)
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 0.05
    assert {id(p) for p in groups["head"]["params"]} == {id(model.fc.weight)}
    before = model.fc.weight.detach().clone()
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    assert not torch.equal(before, model.fc.weight)


def lrs(scheduler, optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_schedules_step_onecycle_plateau():
    opt = torch.optim.SGD(Tiny().parameters(), lr=1.0)
    step = lrs(create_scheduler("step", opt, steps_per_epoch=5, step_epochs=2, step_gamma=0.1), opt, 25)
    assert step[9] == pytest.approx(1.0) and step[10] == pytest.approx(0.1) and step[20] == pytest.approx(0.01)
    opt = torch.optim.SGD(Tiny().parameters(), lr=1.0)
    one = lrs(create_scheduler("onecycle", opt, total_steps=100, warmup_steps=20, lr_start=0.1, lr_peak=1.0,
                               lr_end=0.01), opt, 100)
    assert one[0] == pytest.approx(0.1) and max(one) == pytest.approx(1.0, rel=1e-3) and np.argmax(one) in (19, 20, 21)
    assert one[-1] == pytest.approx(0.01, rel=0.2)
    opt = torch.optim.SGD(Tiny().parameters(), lr=1.0)
    plateau = create_scheduler("plateau", opt, plateau_patience=1, plateau_factor=0.5)
    for score in (0.5, 0.6, 0.6, 0.6):  # no improvement for 2 epochs -> one drop
        plateau.step(score)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


def synthetic_loader(n: int = 24, batch: int = 8, seed: int = 0, shuffle: bool = True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 16, generator=g)
    y = torch.zeros(n, 3)
    y[torch.arange(n), torch.arange(n) % 3] = 1.0
    x[torch.arange(n), 0, (torch.arange(n) % 3) * 2] += 2.0  # learnable: the class shifts one row
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=shuffle,
                                       generator=torch.Generator().manual_seed(seed))


def make_trainer(seed: int = 0, **options) -> Trainer:
    torch.manual_seed(seed)
    model = Tiny()
    opt = create_optimizer("adamw", model, lr=1e-2, weight_decay=1e-2)
    sched = create_scheduler("cosine", opt, total_steps=12, warmup_steps=3, lr_start=1e-3, lr_peak=1e-2, lr_end=1e-4)
    return Trainer(model, create_loss("bce"), opt, sched, torch.device("cpu"), ["a", "b", "c"],
                   augment=lambda x, y: (x + 0.1 * torch.randn_like(x), y),  # consumes the global RNG, as augmentation does
                   options=TrainOptions(**options))


def test_resumed_training_ends_with_the_same_weights_and_metrics():
    full = make_trainer()
    history = full.fit(synthetic_loader(), synthetic_loader(shuffle=False), 4)
    first = make_trainer()
    loader = synthetic_loader()
    first.fit(loader, synthetic_loader(shuffle=False), 2)
    payload = first.checkpoint_payload(2, first.history[-1])
    torch.manual_seed(123), np.random.seed(5)  # whatever happened in between
    resumed = make_trainer(seed=99)
    loader2 = synthetic_loader()  # a fresh loader (generator at its start); its state comes from the checkpoint
    start = resumed.resume(payload, loader2)
    assert start == 3
    again = resumed.fit(loader2, synthetic_loader(shuffle=False), 4, start)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert (a.float() - b.float()).abs().max() <= 1e-6
    drop = ("seconds",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in history] == \
        [{k: v for k, v in h.items() if k not in drop} for h in again]


def test_two_runs_with_the_same_seed_give_identical_metrics():
    runs = [make_trainer().fit(synthetic_loader(), synthetic_loader(shuffle=False), 2) for _ in range(2)]
    assert [h["val_loss"] for h in runs[0]] == [h["val_loss"] for h in runs[1]]


def test_gradient_accumulation_equals_the_larger_batch():
    def one_step(batch: int, accumulate: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        trainer = Trainer(model, create_loss("bce"), opt, None, torch.device("cpu"), ["a", "b", "c"],
                          options=TrainOptions(accumulate_steps=accumulate, channels_last=False))
        data = torch.utils.data.TensorDataset(torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1)),
                                              torch.eye(3)[torch.arange(8) % 3])
        trainer.train_epoch(torch.utils.data.DataLoader(data, batch_size=batch), 1)
        return model[1].weight.detach()

    torch.testing.assert_close(one_step(8, 1), one_step(4, 2), atol=1e-6, rtol=0)


def test_gradient_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = Trainer(model, create_loss("bce"), opt, None, torch.device("cpu"), ["a", "b", "c"],
                      options=TrainOptions(grad_clip=0.01, channels_last=False))
    data = torch.utils.data.TensorDataset(100 * torch.randn(4, 1, 4, 4), torch.eye(3)[torch.arange(4) % 3])
    trainer.train_epoch(torch.utils.data.DataLoader(data, batch_size=4), 1)
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert step.item() == pytest.approx(0.01, rel=1e-3)  # lr 1 x a gradient clipped to norm 0.01


def test_balanced_sampler_weights_and_per_class_cap():
    from dataloader.loaders import balanced_weights
    from dataloader.splits import cap_per_class

    labels = ["a"] * 16 + ["b"] * 4
    w = balanced_weights(labels)
    assert w[0] == pytest.approx(16 ** -0.5) and w[-1] == pytest.approx(0.5)
    assert w[:16].sum() / w.sum() == pytest.approx(4 / 6)  # 16 / 4 recordings -> drawn 2 : 1, not 4 : 1
    table = pd.DataFrame({"primary_label": labels, "path": [f"p{i}" for i in range(20)]})
    capped = cap_per_class(table, 5, seed=0)
    assert capped["primary_label"].value_counts().to_dict() == {"a": 5, "b": 4}
    assert capped.equals(cap_per_class(table, 5, seed=0)) and len(cap_per_class(table, 0, 0)) == 20


def test_every_registered_loss_is_listed():
    assert set(list_losses()) == {"bce", "ce", "focal", "bce_focal", "asl"}


class PickledThing:
    """What a hostile checkpoint carries: an object whose loading runs code."""


def fake_run_checkpoint(folder, name, mtime, model_name="m", labels=("a", "b"), damage=False):
    import os

    from utils.checkpoints import save_checkpoint

    path = save_checkpoint(folder / name / "checkpoints" / "last.pt",
                           {"model": {"w": torch.zeros(2)}, "epoch": 1, "model_name": model_name,
                            "labels": list(labels), "data_process": {"n_mels": 128}})
    if damage:
        path.write_bytes(path.read_bytes()[:100])
    os.utime(path, (mtime, mtime))
    return path


def test_resume_auto_picks_the_newest_checkpoint_that_loads_and_matches_the_run(tmp_path, caplog):
    import logging

    from training.config import ConfigError
    from training.run_folder import resolve_resume

    caplog.set_level(logging.INFO)
    expect = {"model_name": "m", "labels": ["a", "b"], "data_process": {"n_mels": 128}}
    good = fake_run_checkpoint(tmp_path, "r1", 1000)
    fake_run_checkpoint(tmp_path, "r2", 1001, model_name="other")
    fake_run_checkpoint(tmp_path, "r3", 1002, damage=True)
    fake_run_checkpoint(tmp_path, "current", 1003)
    assert resolve_resume("auto", tmp_path, tmp_path / "current", expect) == good
    assert "r3/checkpoints/last.pt: damaged or truncated" in caplog.text and "another model (other" in caplog.text
    assert resolve_resume("", tmp_path, tmp_path / "current") is None
    assert resolve_resume("auto", tmp_path / "none", tmp_path / "current") is None
    with pytest.raises(ConfigError, match="no such checkpoint"):
        resolve_resume(str(tmp_path / "missing.pt"), tmp_path, tmp_path / "current")


def test_a_damaged_foreign_or_pickled_checkpoint_is_named_in_one_line(tmp_path):
    from utils.checkpoints import CheckpointError, load_checkpoint
    from training.run_folder import resolve_resume

    damaged = fake_run_checkpoint(tmp_path, "d", 1000, damage=True)
    with pytest.raises(CheckpointError, match=f"^{damaged}: damaged or truncated"):
        load_checkpoint(damaged)
    foreign = fake_run_checkpoint(tmp_path, "f", 1000, labels=("x",))
    with pytest.raises(CheckpointError, match="cannot continue this run: other labels \\(1 classes, this run 2\\)"):
        resolve_resume(str(foreign), tmp_path, tmp_path / "current", {"labels": ["a", "b"]})
    pickled = tmp_path / "evil.pt"
    torch.save({"model": {}, "thing": PickledThing()}, pickled)  # a class instance: loading it would run code
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(pickled)
    assert str(err.value).startswith(f"{pickled}: refused") and "\n" not in str(err.value)
    assert "weights_only=False" not in str(err.value)


def test_a_failed_checkpoint_write_leaves_no_temporary_file_and_says_the_disk_is_full(tmp_path, monkeypatch):
    import errno
    import os

    from utils.checkpoints import CheckpointError, save_checkpoint

    stale = tmp_path / "last.pt.tmp-999999999"  # a killed writer's leftover (no such process)
    stale.write_bytes(b"partial")

    def full(obj, f, *a, **k):
        with open(f, "wb") as out:
            out.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match=f"writing {tmp_path / 'last.pt'} failed .*no space left on device"):
        save_checkpoint(tmp_path / "last.pt", {"model": {}})
    assert list(tmp_path.iterdir()) == [], "neither the failed write's temporary file nor the stale one is left"


def test_mixed_precision_trains_with_bf16_autocast_on_cpu():
    trainer = make_trainer(amp=True)
    loss_inputs = []
    trainer.loss_fn.register_forward_pre_hook(lambda _, args: loss_inputs.append((args[0].dtype, args[1].dtype)))
    history = trainer.fit(synthetic_loader(), synthetic_loader(shuffle=False), 2)
    assert loss_inputs and set(loss_inputs) == {(torch.float32, torch.float32)}  # the loss never sees bf16 logits
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert next(trainer.model.parameters()).dtype == torch.float32  # weights stay fp32


def test_every_registered_loss_and_schedule_builds_and_takes_a_step():
    from factory.schedulers import list_schedulers, steps_per_epoch_end

    for name in list_losses():
        logits = torch.randn(4, 3, requires_grad=True)
        create_loss(name)(logits, torch.eye(3)[[0, 1, 2, 0]]).backward()
        assert torch.isfinite(logits.grad).all(), name
    for name in list_schedulers():
        opt = torch.optim.SGD(Tiny().parameters(), lr=0.1)
        sched = create_scheduler(name, opt, total_steps=10, warmup_steps=2, steps_per_epoch=5, lr_start=0.01,
                                 lr_peak=0.1, lr_end=0.001, gamma=0.9)
        opt.step()
        sched.step(0.5) if steps_per_epoch_end(sched) else sched.step()
        assert 0 < opt.param_groups[0]["lr"] <= 0.1 + 1e-9, name


def test_torch_compile_switch_trains_the_same_model():
    eager, compiled = make_trainer(), make_trainer(compile=True)
    assert compiled.forward is not compiled.model
    batches = list(synthetic_loader(n=8, shuffle=False))
    losses = []
    for t in (eager, compiled):
        torch.manual_seed(1)  # the same augmentation noise for both
        losses.append(t.train_epoch(batches, 1))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert eager.compile_seconds is None and compiled.compile_seconds > 0  # the compilation, timed apart
    assert compiled.options.compile_mode == "default"  # on CPU; CUDA's auto is reduce-overhead (test_device_batch)
