"""Evaluation statistics that match training: precise BN and an exponential moving average of the weights."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from factory.losses import create_loss
from training.trainer import Trainer, TrainOptions


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def loader(mean: float, n: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 8, 8, generator=g) + mean
    return DataLoader(TensorDataset(x, (torch.rand(n, 2, generator=g) > 0.5).float()), batch_size=8)


def trainer(**options) -> Trainer:
    model = small_net()
    return Trainer(model, create_loss("bce"), torch.optim.SGD(model.parameters(), lr=0.1), None, torch.device("cpu"),
                   ["a", "b"], options=TrainOptions(channels_last=False, **options))


def test_precise_bn_changes_running_statistics_and_not_weights():
    t = trainer(precise_bn_batches=3)
    weights = {k: v.clone() for k, v in t.model.state_dict().items() if "running" not in k and "num_batches" not in k}
    clean = loader(mean=5.0)
    t.precise_bn(clean, 3)
    after = t.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())
    with torch.no_grad():  # the plain mean of the conv outputs over the 3 batches (24 examples)
        features = t.model[0](torch.cat([x for x, _ in clean][:3]))
    torch.testing.assert_close(after["1.running_mean"], features.mean(dim=(0, 2, 3)), atol=1e-4, rtol=1e-4)
    assert not t.model.training


def test_ema_weights_are_saved_and_used_for_validation_when_on():
    t = trainer(ema_decay=0.5)
    t.train_epoch(loader(mean=0.0), epoch=1)
    ema, raw = t.ema.module.state_dict(), t.model.state_dict()
    assert not torch.equal(ema["5.weight"], raw["5.weight"])
    payload = t.checkpoint_payload(1, {"val_score": 0.0})
    assert torch.equal(payload["model"]["5.weight"], ema["5.weight"])  # what inference loads
    assert torch.equal(payload["model_train"]["5.weight"], raw["5.weight"])  # what resume continues from
    x = next(iter(loader(mean=0.0)))[0]
    probs, _, _ = t.predict(DataLoader(TensorDataset(x, torch.zeros(len(x), 2)), batch_size=8))
    with torch.no_grad():
        expected = torch.sigmoid(t.ema.module.eval()(x)).numpy()
    assert abs(probs - expected).max() < 1e-6
    resumed = trainer(ema_decay=0.5)
    resumed.optimizer.load_state_dict(t.optimizer.state_dict())
    resumed.resume(payload, loader(mean=0.0))
    assert torch.equal(resumed.model.state_dict()["5.weight"], raw["5.weight"])
    assert torch.equal(resumed.ema.module.state_dict()["5.weight"], ema["5.weight"])
