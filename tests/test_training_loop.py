"""The training loop does not make the host wait for the device: the running loss is read once per epoch."""
from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.data import DataLoader, TensorDataset

from factory.losses import create_loss
from training.trainer import Trainer, TrainOptions


class SyncCounter(torch.Tensor):
    """A tensor that counts the calls that copy a value to the host (each one waits for the device)."""

    calls = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__bool__):
            cls.calls += 1
        return super().__torch_function__(func, types, args, kwargs or {})


class CountingLoss(nn.Module):
    """``bce`` whose value is a :class:`SyncCounter`, so every read of the loss, or of sums made from it, counts."""

    def __init__(self):
        super().__init__()
        self.inner = create_loss("bce")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.inner(logits, targets).as_subclass(SyncCounter)


def test_the_loop_reads_the_loss_once_per_epoch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    data = DataLoader(TensorDataset(torch.randn(64, 1, 4, 4), (torch.rand(64, 2) > 0.5).float()), batch_size=4)
    trainer = Trainer(model, CountingLoss(), torch.optim.SGD(model.parameters(), lr=0.1), None, torch.device("cpu"),
                      ["a", "b"], options=TrainOptions(channels_last=False))
    SyncCounter.calls = 0
    loss = trainer.train_epoch(data, epoch=1)  # 16 steps
    assert SyncCounter.calls == 1 and loss > 0


class HostReads(TorchFunctionMode):
    """Counts every call that turns a tensor's value into a Python one (on a GPU, each waits for the device)."""

    READS = (torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
             torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.nonzero, torch.nonzero)

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.reads.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def test_a_full_step_with_augmentation_ema_and_schedule_reads_nothing_from_the_device_but_the_epoch_loss():
    from dataloader.augment import BatchAugment
    from factory.optimizers import create_optimizer
    from factory.schedulers import create_scheduler
    from utils.config_schema import AugmentationConfig

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    optimizer = create_optimizer("adamw", model, lr=1e-2, weight_decay=1e-2, fused=True)  # as on CUDA
    scheduler = create_scheduler("cosine", optimizer, total_steps=16, warmup_steps=2, lr_start=1e-3, lr_peak=1e-2,
                                 lr_end=1e-4)
    augment = BatchAugment(AugmentationConfig(augment_cutmix=True), units_per_db=torch.full((8,), 0.1).numpy())
    trainer = Trainer(model, create_loss("bce"), optimizer, scheduler, torch.device("cpu"), list("abc"),
                      augment=augment, options=TrainOptions(ema_decay=0.9))
    # batches as the trainer gets them (the DataLoader itself runs on the host)
    data = list(DataLoader(TensorDataset(torch.randn(64, 1, 8, 16), (torch.rand(64, 3) > 0.5).float()),
                           batch_size=4))
    trainer.train_epoch(data, epoch=1)  # the EMA's first update copies the weights
    with HostReads() as mode:
        trainer.train_epoch(data, epoch=2)  # 16 steps
    assert mode.reads == ["item"], mode.reads
