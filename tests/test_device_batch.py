"""The batch and learning rates a device trains with, the compile mode, the fused optimizers."""
from __future__ import annotations

import pytest
import torch

from factory.optimizers import create_optimizer
from training.config import load_config
from training.device_batch import MIN_STEPS_PER_EPOCH, device_batch_size, for_device
from training.trainer import compile_mode


def test_a_gpu_trains_with_batch_size_cuda_and_sqrt_scaled_learning_rates():
    cfg = load_config(None)
    assert (cfg.trainer.batch_size, cfg.trainer.batch_size_cuda, cfg.agent.lr_scaling) == (32, 256, "sqrt")
    gpu = for_device(cfg, "cuda", 19_567)  # BirdCLEF 2024's training split
    assert gpu.trainer.batch_size == 256
    for key in ("lr_start", "lr_warmup_end", "lr_end"):
        assert getattr(gpu.agent, key) == pytest.approx(getattr(cfg.agent, key) * 8 ** 0.5)
    assert cfg.trainer.batch_size == 32 and cfg.agent.lr_warmup_end == pytest.approx(2e-3), "cfg itself unchanged"
    assert for_device(cfg, "cpu", 19_567) is cfg  # a CPU keeps its batch and learning rates


def test_the_gpu_batch_keeps_enough_steps_per_epoch_and_never_falls_under_batch_size():
    cfg = load_config(None)
    assert for_device(cfg, "cuda", 312) is cfg  # the demo's ~310 training windows: batch 32, as on CPU
    assert device_batch_size(cfg.trainer, "cuda", 100 * MIN_STEPS_PER_EPOCH) == 96  # a multiple of 8 under the cap
    assert device_batch_size(cfg.trainer, "cuda", 10 ** 6) == 256
    linear = for_device(load_config(None, ["agent.lr_scaling=linear"]), "cuda", 10 ** 6)
    assert linear.agent.lr_warmup_end == pytest.approx(2e-3 * 8)
    assert for_device(load_config(None, ["agent.lr_scaling=none"]), "cuda", 10 ** 6).agent.lr_warmup_end == 2e-3
    assert for_device(load_config(None, ["trainer.batch_size_cuda=0"]), "cuda", 10 ** 6).trainer.batch_size == 32
    # two ranks of torchrun: each has half the examples to fill its batches with
    assert for_device(cfg, "cuda", 12_000, world_size=2).trainer.batch_size == 184


def test_compile_mode_auto_captures_cuda_graphs_on_cuda_only():
    assert compile_mode("auto", "cuda") == "reduce-overhead" and compile_mode("auto", "cpu") == "default"
    assert compile_mode("max-autotune", "cuda") == "max-autotune"


@pytest.mark.parametrize("name, fused", [("adamw", True), ("adam", True), ("sgd", True), ("radam", None)])
def test_fused_optimizers_where_torch_has_them(name, fused):
    model = torch.nn.Linear(4, 2)
    opt = create_optimizer(name, model, lr=1e-2, fused=True)
    assert opt.defaults.get("fused") is fused
    before = model.weight.detach().clone()
    model(torch.randn(3, 4)).sum().backward()
    opt.step()  # torch 2.9 has fused CPU kernels too, so the flag is checked here as on CUDA
    assert not torch.equal(before, model.weight)
    assert create_optimizer(name, model, lr=1e-2).defaults.get("fused") in (None, False)
