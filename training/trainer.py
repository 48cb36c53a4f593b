"""The training loop: epochs with tqdm, validation with the competition metric, callbacks, exact resume."""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from factory.distillation import inference_network
from factory.schedulers import steps_per_epoch_end
from training.callbacks import Callback
from training.distributed import DistContext, all_gather, broadcast
from utils.metrics import epoch_rank, validation_scores

log = logging.getLogger(__name__)
PROGRESS_EVERY = 20  # steps between progress-bar loss updates (each one waits for the device)


@dataclass
class TrainOptions:
    """How the loop runs (from ``[trainer]`` and ``[agent]``)."""

    channels_last: bool = True
    amp: bool = False  # autocast: bf16 where the device supports it, else fp16 with a gradient scaler
    compile: bool = False
    compile_mode: str = "default"  # torch.compile's mode (reduce-overhead: CUDA graphs)
    grad_clip: float = 0.0
    accumulate_steps: int = 1
    lr_verbose: bool = False
    monitor: str = "val_score"  # which epoch's validation outputs to keep as the best (``*_loss``: lowest)
    ema_decay: float = 0.0  # > 0: validate, checkpoint and predict with an exponential moving average of the weights
    precise_bn_batches: int = 0  # > 0: batch-norm statistics recomputed on this many clean batches before validation


def compile_mode(mode: str, device_type: str) -> str:
    """``[trainer] compile_mode``: ``auto`` = ``reduce-overhead`` (CUDA graphs) on CUDA, ``default`` elsewhere."""
    if mode != "auto":
        return mode
    return "reduce-overhead" if device_type == "cuda" else "default"


def amp_enabled(setting: str, device_type: str) -> bool:
    """``[trainer] amp``: ``true``, ``false``, or ``auto`` = on CUDA only."""
    return setting == "true" or (setting == "auto" and device_type == "cuda")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states as plain data (``weights_only`` loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]}}


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


class Trainer:
    """Runs epochs of ``model`` on batches ``(x, y)``; ``augment`` is applied to training batches on the device.

    A callback can end training early by setting ``trainer.stop_training = True``.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Optional[Any], device: torch.device, labels: Sequence[str],
                 callbacks: Sequence[Callback] = (),
                 augment: Optional[Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = None,
                 options: Optional[TrainOptions] = None, checkpoint_extra: Optional[dict[str, Any]] = None,
                 dist_ctx: Optional[DistContext] = None):
        self.options = options or TrainOptions()
        self.dist = dist_ctx or DistContext()
        self.memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        self.model = model.to(device).to(memory_format=self.memory_format)
        forward: nn.Module = self.model
        if self.dist.enabled:  # gradients averaged across ranks; self.model stays the plain module
            forward = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        # static shapes (dynamic=False; the loader drops the last partial batch): one graph, captured once
        self.forward = (torch.compile(forward, mode=self.options.compile_mode, dynamic=False)
                        if self.options.compile else forward)
        self.compile_seconds: Optional[float] = None  # the first compiled step (compilation), apart from the epochs
        self.loss_fn, self.optimizer, self.scheduler = loss_fn, optimizer, scheduler
        self.device, self.labels, self.callbacks = device, list(labels), list(callbacks)
        self.augment, self.checkpoint_extra = augment, checkpoint_extra or {}
        self.amp_dtype = (torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.options.amp and self.amp_dtype == torch.float16)
        self.history: list[dict[str, float]] = []
        self.last_val: tuple[np.ndarray, np.ndarray] = (np.zeros((0, len(self.labels))),) * 2
        self.best_val: Optional[tuple[int, np.ndarray, np.ndarray]] = None  # (epoch, probs, targets)
        self.stop_training = False
        self.train_loader: Optional[DataLoader] = None
        self.bn_loader: Optional[DataLoader] = None  # clean (unaugmented) training batches for precise BN
        self.ema = None
        if self.options.ema_decay > 0:
            from training.weight_average import WeightEMA  # noqa: PLC0415

            self.ema = WeightEMA(self.model, self.options.ema_decay)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that validate, are saved for inference and predict: the EMA's when on, else the model's;
        of a model with training-only parts (embedding distillation's projection) its inference network."""
        return inference_network(self.ema.module if self.ema is not None else self.model)

    @torch.no_grad()
    def precise_bn(self, loader: DataLoader, batches: int) -> None:
        """Recompute the evaluation model's batch-norm running statistics as plain averages over ``batches`` clean
        training batches (the running statistics gathered on augmented batches drift from the clean ones that
        validation and inference see); weights are untouched."""
        from itertools import islice  # noqa: PLC0415

        from torch.optim.swa_utils import update_bn  # noqa: PLC0415

        model = self.eval_model
        update_bn((self.to_device(x) for x, _ in islice(loader, batches)), model)
        model.eval()

    @property
    def activation(self) -> str:
        """The output activation the loss declares (``sigmoid``, or ``softmax`` for softmax cross-entropy)."""
        return getattr(self.loss_fn, "activation", "sigmoid")

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A model input on the training device, in the model's memory format."""
        return x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.options.amp)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoid (multi-label) or softmax (a model trained with ``ce``) probabilities."""
        logits = logits.float()
        return torch.softmax(logits, dim=1) if self.activation == "softmax" else torch.sigmoid(logits)

    def train_epoch(self, loader: DataLoader, epoch: int, max_batches: Optional[int] = None) -> float:
        """One pass over ``loader`` (its first ``max_batches`` batches when given); returns the mean training loss."""
        self.model.train()
        if hasattr(getattr(loader, "sampler", None), "set_epoch"):  # distributed samplers reshuffle per epoch
            loader.sampler.set_epoch(epoch)
        # the running loss stays on the device: reading it (``.item()``) makes the host wait for the device, so it is
        # read once per epoch, and every PROGRESS_EVERY steps only when a progress bar is shown
        total, count, acc = torch.zeros((), device=self.device), 0, self.options.accumulate_steps
        per_step = self.scheduler is not None and not steps_per_epoch_end(self.scheduler)
        bar = tqdm(loader, desc=f"epoch {epoch} train", unit="batch", leave=False, disable=None)
        self.optimizer.zero_grad(set_to_none=True)
        n_batches = len(loader) if max_batches is None else min(len(loader), max_batches)
        for i, (x, y) in enumerate(bar):
            if i == n_batches:
                break
            x, y = self.to_device(x), y.to(self.device, non_blocking=True)
            if self.augment is not None:
                x, y = self.augment(x, y)
            first_compiled = self.options.compile and self.compile_seconds is None
            t0 = time.perf_counter()
            if self.options.compile:  # a new step for CUDA graphs: the previous step's outputs may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            with self._autocast():
                logits = self.forward(x)
            loss = self.loss_fn(logits.float(), y)  # the loss in float32 whatever autocast's dtype
            self.scaler.scale(loss / acc).backward()
            if first_compiled:  # once per run: wait for the device to time the compilation
                loss.detach().cpu()
                self.compile_seconds = time.perf_counter() - t0
                log.info("torch.compile (mode %s): first step %.1f s (compilation); epoch times include it once",
                         self.options.compile_mode, self.compile_seconds)
            if (i + 1) % acc == 0 or i + 1 == n_batches:
                if self.options.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                self.optimizer.zero_grad(set_to_none=True)
                if per_step:
                    self.scheduler.step()
            total += loss.detach().float() * len(x)
            count += len(x)
            if not bar.disable and (i + 1) % PROGRESS_EVERY == 0:
                bar.set_postfix(loss=f"{total.item() / count:.4f}")
        sums = all_gather(self.dist, (total.item(), count))
        return sum(t for t, _ in sums) / max(sum(c for _, c in sums), 1)

    @torch.inference_mode()
    def predict(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray, float]:
        """(probabilities, targets, mean loss) over ``loader``; under torchrun each rank predicts its share
        and the logits are gathered in dataset order, so every rank gets the single-process result."""
        model = self.eval_model.eval()
        logits_all, targets = [], []
        for x, y in tqdm(loader, desc="validate", unit="batch", leave=False, disable=None):
            with self._autocast():
                logits_all.append(model(self.to_device(x)).float().cpu())
            targets.append(y.float().cpu())
        logits, y = torch.cat(logits_all), torch.cat(targets)
        if self.dist.enabled:
            order = list(iter(loader.sampler))
            parts = all_gather(self.dist, (order, logits, y))
            n = len(loader.dataset)
            logits, y = torch.empty(n, logits.shape[1]), torch.empty(n, y.shape[1])
            for idx, part_logits, part_y in parts:  # padded duplicates land on the same row twice
                logits[idx], y[idx] = part_logits, part_y
        loss = self.loss_fn(logits, y).item() if len(y) else float("nan")
        return self.probabilities(logits).numpy(), y.numpy(), loss

    @torch.inference_mode()
    def predict_dataset(self, dataset: Dataset, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, targets) of the model over ``dataset`` in order, in this process alone (no collectives:
        safe on rank 0 of a torchrun job), e.g. the held-out splits scored with the best weights."""
        model = self.eval_model.eval()
        probs, targets = [], []
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            with self._autocast():
                probs.append(self.probabilities(model(self.to_device(x))).cpu().numpy())
            targets.append(y.numpy())
        return np.concatenate(probs), np.concatenate(targets)

    def fit(self, train_loader: DataLoader, val_loader: DataLoader, n_epochs: int, start_epoch: int = 1,
            extra_val: Optional[dict[str, DataLoader]] = None, max_batches: Optional[int] = None
            ) -> list[dict[str, float]]:
        """Train epochs ``start_epoch`` .. ``n_epochs``, validating after each; returns every epoch's metrics
        (those restored by :meth:`resume` included). Each ``extra_val`` set (e.g. ``{"soundscape": loader}``) is
        scored too, as ``<name>_val_score``, ``<name>_val_loss``, ``<name>_val_cmap``, .... ``max_batches``: train
        only that many batches of each epoch (a benchmark's short epoch)."""
        self.train_loader = train_loader
        for cb in self.callbacks:
            cb.on_train_start(self)
        for epoch in range(start_epoch, n_epochs + 1):
            t0 = time.perf_counter()
            train_loss = self.train_epoch(train_loader, epoch, max_batches)
            if self.options.precise_bn_batches and self.bn_loader is not None:
                self.precise_bn(self.bn_loader, self.options.precise_bn_batches)
            probs, targets, val_loss = self.predict(val_loader)
            self.last_val = (probs, targets)
            metrics = {"epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val_loss, 6),
                       **validation_scores(targets, probs, self.labels)}
            for name, loader in (extra_val or {}).items():
                extra_probs, extra_targets, extra_loss = self.predict(loader)
                metrics[f"{name}_val_loss"] = round(extra_loss, 6)
                metrics.update({f"{name}_{k}": v for k, v in
                                validation_scores(extra_targets, extra_probs, self.labels).items()})
            metrics.update(lr=self.optimizer.param_groups[0]["lr"], seconds=round(time.perf_counter() - t0, 2))
            self._keep_if_best(epoch, metrics, probs, targets)
            if self.scheduler is not None and steps_per_epoch_end(self.scheduler):
                self.scheduler.step(metrics["val_score"] if metrics["val_score"] == metrics["val_score"] else 0.0)
            self.history.append(metrics)
            log.info("epoch %d/%d: train_loss %.4f  val_loss %.4f  val_score %.4f%s  (%.0f s)%s", epoch, n_epochs,
                     train_loss, val_loss, metrics["val_score"],
                     "".join(f"  {name}_val_score {metrics[f'{name}_val_score']:.4f}" for name in extra_val or {}),
                     metrics["seconds"],
                     "  lr " + ", ".join(f"{g.get('name', i)} {g['lr']:.2e}"
                                         for i, g in enumerate(self.optimizer.param_groups))
                     if self.options.lr_verbose else "")
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, metrics)
            self.stop_training = broadcast(self.dist, self.stop_training)  # rank 0's callbacks decide
            if self.stop_training:
                log.info("training stopped after epoch %d", epoch)
                break
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def _keep_if_best(self, epoch: int, metrics: dict[str, float], probs: np.ndarray, targets: np.ndarray) -> None:
        rank = epoch_rank(metrics, self.options.monitor)
        earlier = [r for r in (epoch_rank(h, self.options.monitor) for h in self.history) if r is not None]
        if rank is not None and (not earlier or rank > max(earlier)):  # NaN never wins
            self.best_val = (epoch, probs, targets)

    def checkpoint_payload(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """Plain-data checkpoint: weights, optimizer/scheduler/scaler state, epoch, metrics and history, every
        RNG state (and the shuffling generators of the training loader and of precise BN's batches), plus the
        extras (config, labels, normalisation statistics, front-end settings)."""
        generator = getattr(self.train_loader, "generator", None)
        bn_generator = getattr(self.bn_loader, "generator", None)  # so a resumed run's precise BN draws the same
        return {
            "model": {k: v.detach().cpu() for k, v in self.eval_model.state_dict().items()},  # what inference loads
            **({"model_train": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}
               if self.eval_model is not self.model else {}),
            **({"ema_n_averaged": self.ema.n_averaged.detach().cpu()} if self.ema is not None else {}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "metrics": dict(metrics),
            "history": [dict(h) for h in self.history],
            "labels": self.labels,
            "rng": rng_state(),
            "loader_generator": generator.get_state() if generator is not None else None,
            "bn_loader_generator": bn_generator.get_state() if bn_generator is not None else None,
            "activation": self.activation,
            **self.checkpoint_extra,
        }

    def resume(self, payload: dict[str, Any], train_loader: DataLoader) -> int:
        """Restore everything from a :meth:`checkpoint_payload`; returns the first epoch still to train."""
        if list(payload["labels"]) != self.labels:
            raise ValueError("the checkpoint was trained on other labels; resume needs the same data and fold")
        self.model.load_state_dict(payload.get("model_train", payload["model"]))
        if self.ema is not None:
            inference_network(self.ema.module).load_state_dict(payload["model"])
            if "ema_n_averaged" in payload:
                self.ema.n_averaged.copy_(payload["ema_n_averaged"])
                self.ema.sync_count()
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scheduler is not None and payload.get("scheduler") is not None:
            self.scheduler.load_state_dict(payload["scheduler"])
        if payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.history = [dict(h) for h in payload.get("history", [])]
        set_rng_state(payload["rng"])
        generator = getattr(train_loader, "generator", None)
        if generator is not None and payload.get("loader_generator") is not None:
            generator.set_state(payload["loader_generator"])
        bn_generator = getattr(self.bn_loader, "generator", None)
        if bn_generator is not None and payload.get("bn_loader_generator") is not None:
            bn_generator.set_state(payload["bn_loader_generator"])
        return int(payload["epoch"]) + 1
