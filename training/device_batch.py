"""The training batch a device gets: a GPU trains with ``[trainer] batch_size_cuda`` (``batch_size``, a CPU's value,
leaves most of it idle), capped so that a small dataset still gets enough optimizer steps per epoch, and the learning
rates follow the batch by ``[agent] lr_scaling``."""
from __future__ import annotations

import dataclasses
import logging

from utils.config_schema import Config, TrainerConfig
from utils.registry import Registry

log = logging.getLogger(__name__)
MIN_STEPS_PER_EPOCH = 32  # fewer optimizer steps per epoch than this and a larger batch costs more than it gives
BATCH_MULTIPLE = 8  # larger batches are rounded down to a multiple of this (tensor-core friendly shapes)
LR_SCALINGS = Registry("lr scaling")
LR_SCALINGS.register("sqrt")(lambda ratio: ratio ** 0.5)  # Adam-type optimizers (Malladi et al. 2022)
LR_SCALINGS.register("linear")(lambda ratio: ratio)  # SGD (Goyal et al. 2017)
LR_SCALINGS.register("none")(lambda ratio: 1.0)


def device_batch_size(trainer: TrainerConfig, device_type: str, n_train: int) -> int:
    """The training batch on ``device_type`` for ``n_train`` training examples (per process): ``batch_size`` on a
    CPU; on CUDA ``batch_size_cuda``, but no more than keeps :data:`MIN_STEPS_PER_EPOCH` optimizer steps per epoch,
    and never less than ``batch_size``."""
    if device_type != "cuda" or not trainer.batch_size_cuda:
        return trainer.batch_size
    cap = n_train // (MIN_STEPS_PER_EPOCH * trainer.accumulate_steps)
    batch = min(trainer.batch_size_cuda, cap) // BATCH_MULTIPLE * BATCH_MULTIPLE
    return max(batch, trainer.batch_size)


def for_device(cfg: Config, device_type: str, n_train: int, world_size: int = 1) -> Config:
    """``cfg`` with the training batch of :func:`device_batch_size` and, when it differs from ``batch_size``, the
    learning rates (``lr_start``, ``lr_warmup_end``, ``lr_end``) scaled by ``[agent] lr_scaling``; logged."""
    batch = device_batch_size(cfg.trainer, device_type, n_train // max(world_size, 1))
    if batch == cfg.trainer.batch_size:
        if device_type == "cuda" and cfg.trainer.batch_size_cuda > batch:
            log.info("CUDA: batch %d kept (%d training examples: batch_size_cuda = %d would give fewer than %d steps "
                     "per epoch)", batch, n_train, cfg.trainer.batch_size_cuda, MIN_STEPS_PER_EPOCH)
        return cfg
    factor = LR_SCALINGS.create(cfg.agent.lr_scaling, ratio=batch / cfg.trainer.batch_size)
    agent = dataclasses.replace(cfg.agent, lr_start=cfg.agent.lr_start * factor,
                                lr_warmup_end=cfg.agent.lr_warmup_end * factor, lr_end=cfg.agent.lr_end * factor)
    log.info("CUDA: batch %d instead of %d ([trainer] batch_size_cuda), learning rates x %.3g (%s scaling): peak "
             "%.3g", batch, cfg.trainer.batch_size, factor, cfg.agent.lr_scaling, agent.lr_warmup_end)
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, batch_size=batch), agent=agent)
