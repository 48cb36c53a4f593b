"""The training loop: epochs with tqdm, validation with the competition metric, callbacks."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from utils.callbacks import Callback
from utils.metrics import ScoringError, competition_score

log = logging.getLogger(__name__)


def validation_score(targets: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> float:
    """Competition metric on validation windows; positives are the primary labels (target 1.0)."""
    ids = [str(i) for i in range(len(targets))]
    solution = pd.DataFrame((targets >= 1.0).astype(np.int8), columns=list(labels)).assign(row_id=ids)
    submission = pd.DataFrame(probs, columns=list(labels)).assign(row_id=ids)
    try:
        return competition_score(solution, submission, "row_id")
    except ScoringError:
        return float("nan")


class Trainer:
    """Runs epochs of ``model`` on batches ``(x, y)``; ``augment`` is applied to training batches on the device."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Optional[torch.optim.lr_scheduler.LRScheduler], device: torch.device,
                 labels: Sequence[str], callbacks: Sequence[Callback] = (),
                 augment: Optional[Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = None, channels_last: bool = True,
                 checkpoint_extra: Optional[dict[str, Any]] = None, lr_verbose: bool = False):
        self.model = model.to(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.loss_fn, self.optimizer, self.scheduler = loss_fn, optimizer, scheduler
        self.device, self.labels, self.callbacks = device, list(labels), list(callbacks)
        self.augment, self.checkpoint_extra, self.lr_verbose = augment, checkpoint_extra or {}, lr_verbose
        self.history: list[dict[str, float]] = []
        self.last_val: tuple[np.ndarray, np.ndarray] = (np.zeros((0, len(self.labels))),) * 2

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def train_epoch(self, loader: DataLoader, epoch: int) -> float:
        """One pass over ``loader``; returns the mean training loss."""
        self.model.train()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch} train", unit="batch", leave=False, disable=None)
        for x, y in bar:
            x, y = self._to_device(x), y.to(self.device)
            if self.augment is not None:
                x, y = self.augment(x, y)
            loss = self.loss_fn(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            total += loss.item() * len(x)
            count += len(x)
            bar.set_postfix(loss=f"{total / count:.4f}")
        return total / max(count, 1)

    @torch.inference_mode()
    def predict(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray, float]:
        """(sigmoid probabilities, targets, mean loss) over ``loader``."""
        self.model.eval()
        probs, targets, total, count = [], [], 0.0, 0
        for x, y in tqdm(loader, desc="validate", unit="batch", leave=False, disable=None):
            logits = self.model(self._to_device(x))
            y = y.to(self.device)
            total += self.loss_fn(logits, y).item() * len(x)
            count += len(x)
            probs.append(torch.sigmoid(logits).float().cpu().numpy())
            targets.append(y.cpu().numpy())
        return np.concatenate(probs), np.concatenate(targets), total / max(count, 1)

    def fit(self, train_loader: DataLoader, val_loader: DataLoader, n_epochs: int) -> list[dict[str, float]]:
        """Train ``n_epochs`` epochs, validating after each; returns one metrics dict per epoch."""
        for cb in self.callbacks:
            cb.on_train_start(self)
        for epoch in range(1, n_epochs + 1):
            t0 = time.perf_counter()
            train_loss = self.train_epoch(train_loader, epoch)
            probs, targets, val_loss = self.predict(val_loader)
            self.last_val = (probs, targets)
            metrics = {"epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
                       "val_score": round(validation_score(targets, probs, self.labels), 6),
                       "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 2)}
            self.history.append(metrics)
            log.info("epoch %d/%d: train_loss %.4f  val_loss %.4f  val_score %.4f  (%.0f s)%s", epoch, n_epochs,
                     train_loss, val_loss, metrics["val_score"], metrics["seconds"],
                     f"  lr {metrics['lr']:.2e}" if self.lr_verbose else "")
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, metrics)
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def checkpoint_payload(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """Plain-data checkpoint: weights, optimizer/scheduler state, epoch, metrics, RNG, plus the extras
        (config, labels, normalisation statistics, front-end settings)."""
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": epoch,
            "metrics": dict(metrics),
            "labels": self.labels,
            "rng": {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(
                np.random.get_state()[1].astype(np.int64))},
            **self.checkpoint_extra,
        }
