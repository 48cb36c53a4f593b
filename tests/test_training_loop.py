"""The training loop does not make the host wait for the device: the running loss is read once per epoch."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from factory.losses import create_loss
from utils.trainer import Trainer, TrainOptions


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
