"""The training stage of a run: split, loaders, model, loss, optimizer, schedule, callbacks, the loop, evaluation.

Everything here is asked of the registries and of the run's front end (``data.frontend``): the model family
builds the network, the loss declares its activation, the keyword adapters beside each factory turn ``[agent]``
into arguments, so a new family, loss or schedule touches its own module, the schema and ``config.ini`` only.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from dataloader.augment import BatchAugment
from dataloader.run_data import RunData
from dataloader.standardize import Standardizer
from training.callbacks import ModelCheckpoint
from training.config import ConfigError
from utils.checkpoints import ModelMeta
from utils.config_schema import Config
from training.device_batch import for_device
from training.distributed import DistContext
from utils.runtime import training_device
from utils.tasks import get_task, output_names
from training.trainer import Trainer, TrainOptions, amp_enabled, compile_mode

log = logging.getLogger(__name__)


@dataclass
class RunSplit:
    """The examples of one run: training rows (with soundscape windows), validation, test, and the outputs."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    soundscape_val: Optional[pd.DataFrame]  # labelled soundscape windows scored each epoch (2026)
    recordings: dict[str, pd.DataFrame]  # the recordings of each split (before chunking)
    labels: list[str]
    event_bins: int  # > 0: frame-level outputs (task = events)
    dropped: pd.DataFrame  # duration outliers (path, reason)

    @property
    def embedding_dim(self) -> int:
        """Columns of the teacher's embedding at the end of the training targets (embedding distillation), or 0."""
        return len(self.train["teacher_embedding"].iloc[0]) if "teacher_embedding" in self.train else 0

    @property
    def outputs(self) -> list[str]:
        """The model's output names: the labels, or ``class@bin`` (class-major) for events."""
        return output_names(self.labels, self.event_bins)


def split_run(cfg: Config, data: RunData, run_dir: Path, is_main: bool) -> RunSplit:
    """Rare classes and duration outliers out, the grouped split (written to the run folder and the cache's
    ``splits/``), fixed chunks when asked, and the soundscape windows joined to training."""
    from dataloader.curation import select_for_run  # noqa: PLC0415
    from dataloader.splits import filter_rare_classes, split_key, write_split  # noqa: PLC0415

    table = filter_rare_classes(data.cache.table, cfg.data.min_samples_in_class)
    selection = select_for_run(table, cfg.data, cfg.data.split_seed, data.frontend.frames_for(cfg.data.window_s),
                               classes=data.source.classes)
    if is_main:
        kept = data.cache.folder / "splits" / split_key(cfg.data, cfg.paths.data_dir, cfg.data.split_seed,
                                                        cfg.testing.testing)
        for folder in (run_dir / "split", kept):
            write_split(folder, selection.recordings)
        log.info("split written to %s and %s (train.csv, val.csv, test.csv, split_counts.json)", run_dir / "split",
                 kept)
    train_df = selection.parts["train"]
    for what, rows in {"pseudo-labelled": data.pseudo, "labelled soundscape": data.windows.get("train")}.items():
        if rows is not None and len(rows):  # windows cut from soundscapes train, never validate with the focal set
            train_df = pd.concat([train_df, rows], ignore_index=True)
            log.info("training on %d %s windows as well", len(rows), what)
    if cfg.agent.distill_teacher:
        from training.teacher_targets import teacher_targets  # noqa: PLC0415

        soft = teacher_targets(train_df, selection.labels, cfg.agent.distill_teacher,
                               data.frontend.frames_for(cfg.data.window_s), cfg.paths.data_dir,
                               run_dir if is_main else None, cfg.model.pretrained_path)
        train_df = train_df.assign(teacher_targets=list(soft))
    if cfg.agent.distill_embedding:
        from training.teacher_targets import teacher_embeddings  # noqa: PLC0415

        embedding = teacher_embeddings(train_df, cfg.agent.distill_embedding, cfg.data.window_s,
                                       data.frontend.frames_for(cfg.data.window_s), cfg.paths.cache_dir,
                                       cfg.data.num_workers)
        train_df = train_df.assign(teacher_embedding=list(embedding))
    return RunSplit(train_df, selection.parts["val"], selection.parts["test"], data.windows.get("val"),
                    selection.recordings, selection.labels, get_task(cfg.data.task).event_bins(cfg.data.event_bins),
                    selection.dropped)


def run_loaders(cfg: Config, data: RunData, split: RunSplit, standardizer: Standardizer, device: torch.device,
                ctx: DistContext) -> tuple[DataLoader, DataLoader, dict[str, DataLoader], Optional[BatchAugment]]:
    """(train loader, validation loader, extra validation loaders, the augmentation the trainer applies on the
    device or None when the loader's workers apply it)."""
    from dataloader.loaders import background_bank, chunk_bank, make_eval_loader, make_loaders  # noqa: PLC0415

    frontend = data.frontend
    bank, chunks = None, None
    if data.background is not None and len(data.background):
        bank = background_bank(data.background, cfg.data, frontend, standardizer)
    if cfg.augmentation.data_augmentation and cfg.augmentation.augment_soundscape_mix:
        rows = [r for r in (data.pseudo, data.windows.get("train")) if r is not None and len(r)]
        if rows:
            chunks = chunk_bank(pd.concat(rows, ignore_index=True), split.labels, cfg.data, frontend, standardizer)
            log.info("soundscape mixing: %d soundscape windows with labels to blend in", len(chunks.dataset))
        else:
            log.warning("augment_soundscape_mix: no pseudo-labelled ([data] pseudo_labels) or labelled soundscape "
                        "windows in this run; no soundscape mixing")
    augment = BatchAugment(cfg.augmentation, frontend.level_units(standardizer), background=bank,
                           ops=frontend.augment_ops(), time_unit=frontend.mask_time_unit, chunks=chunks,
                           embedding_columns=split.embedding_dim)
    in_workers = device.type == "cpu" and cfg.trainer.num_workers > 0  # on a GPU it runs on the GPU
    pin = device.type == "cuda"  # page-locked batches: the copies to the GPU overlap compute
    train_loader, val_loader = make_loaders(split.train, split.val, split.labels, cfg.data, cfg.trainer, frontend,
                                            standardizer, augment=augment if in_workers else None, rank=ctx.rank,
                                            world_size=ctx.world_size, pin_memory=pin,
                                            drop_last=cfg.trainer.compile)  # compiled: static shapes
    extra_val = {}
    if split.soundscape_val is not None and len(split.soundscape_val):  # scored each epoch as soundscape_val_*
        extra_val["soundscape"] = make_eval_loader(split.soundscape_val, split.labels, cfg.data, cfg.trainer,
                                                   frontend, standardizer, ctx.rank, ctx.world_size, pin)
    elif cfg.callbacks.model_checkpoint_type.startswith("soundscape"):
        raise ConfigError(f"[callbacks] model_checkpoint_type = {cfg.callbacks.model_checkpoint_type}: no labelled "
                          f"soundscape windows validate in this run (source {data.source.name}, [data] "
                          f"soundscape_labels = {cfg.data.soundscape_labels}); allowed: val_score, val_loss")
    return train_loader, val_loader, extra_val, None if in_workers else augment


def run_loss(cfg: Config, split: RunSplit) -> torch.nn.Module:
    """``[agent] loss`` with its settings, and per-class weights when ``[data] balance = weights``."""
    from dataloader.curation import class_weights, event_presence  # noqa: PLC0415
    from dataloader.dataset import make_targets  # noqa: PLC0415
    from factory.losses import create_loss, loss_kwargs  # noqa: PLC0415

    weights, bins = None, max(split.event_bins, 1)
    if cfg.data.balance == "weights":
        clip_targets = (event_presence(split.train, split.labels) if split.event_bins
                        else make_targets(split.train, split.labels, cfg.data))
        weights = [w for w in class_weights(clip_targets, cfg.data.task) for _ in range(bins)]
        log.info("balance = weights: %s", ", ".join(f"{c} {w:.2f}" for c, w in zip(split.labels, weights[::bins])))
    loss = create_loss(cfg.agent.loss, **loss_kwargs(cfg.agent, weights))
    if cfg.agent.distill_teacher:
        from factory.distillation import DistillationLoss  # noqa: PLC0415

        loss = DistillationLoss(loss, cfg.agent.distill_weight, cfg.agent.distill_temperature)
    if split.embedding_dim:
        from factory.distillation import EmbeddingRegressionLoss  # noqa: PLC0415

        loss = EmbeddingRegressionLoss(loss, len(split.outputs), split.embedding_dim,
                                       cfg.agent.distill_embedding_weight)
    return loss


def run_epochs(cfg: Config) -> int:
    """Epochs of this run (``[testing] testing_epochs`` in testing mode)."""
    return cfg.testing.testing_epochs if cfg.testing.testing else cfg.trainer.n_epochs


def build_trainer(cfg: Config, data: RunData, split: RunSplit, standardizer: Standardizer, train_loader: DataLoader,
                  device: torch.device, ctx: DistContext, run_dir: Path, augment: Optional[BatchAugment]
                  ) -> tuple[Trainer, Optional[ModelCheckpoint], str]:
    """(trainer, checkpoint callback or None, model name): the family's network, the optimizer and schedule from
    their keyword adapters, the loss, the callbacks, and what every checkpoint carries for inference."""
    from factory.families import build_model, get_family  # noqa: PLC0415
    from factory.optimizers import create_optimizer, optimizer_kwargs  # noqa: PLC0415
    from factory.schedulers import create_scheduler, scheduler_kwargs  # noqa: PLC0415
    from training.callbacks import build_callbacks  # noqa: PLC0415

    model, model_kwargs, model_name = build_model(cfg, len(split.labels), split.event_bins)
    if split.embedding_dim:  # a projection onto the teacher's embedding, trained beside the network, not exported
        from factory.distillation import EmbeddingStudent  # noqa: PLC0415

        model = EmbeddingStudent(model, split.embedding_dim)
    optimizer = create_optimizer(model=model, fused=device.type == "cuda", **optimizer_kwargs(cfg.agent))
    steps_per_epoch = -(-len(train_loader) // cfg.trainer.accumulate_steps)  # optimizer steps
    scheduler = create_scheduler(optimizer=optimizer, **scheduler_kwargs(cfg.agent, steps_per_epoch, run_epochs(cfg)))
    loss = run_loss(cfg, split)
    meta = ModelMeta(labels=tuple(split.outputs), model_name=model_name, data_process=data.frontend.settings_dict(),
                     window_s=cfg.data.window_s, standardizer=standardizer.to_dict(), model_kwargs=model_kwargs,
                     input=data.frontend.kind, pad_mode=cfg.data.pad_mode, activation=getattr(loss, "activation", "sigmoid"),
                     task=cfg.data.task, classes=tuple(split.labels))
    extra = {"config": cfg.to_dict(), **meta.to_dict()}
    callbacks, checkpoint = build_callbacks(cfg, run_dir, ctx.is_main)
    t = cfg.trainer
    options = TrainOptions(channels_last=t.channels_last and get_family(cfg.model.family).channels_last,
                           amp=amp_enabled(t.amp, device.type), compile=t.compile,
                           compile_mode=compile_mode(t.compile_mode, device.type),
                           grad_clip=t.grad_clip, accumulate_steps=t.accumulate_steps,
                           lr_verbose=cfg.agent.lr_verbose, monitor=cfg.callbacks.model_checkpoint_type,
                           ema_decay=t.ema_decay, precise_bn_batches=t.precise_bn_batches)
    if t.overfit_batch:
        check_overfit(model, loss, train_loader, t.overfit_batch, cfg.agent.lr_warmup_end)
    trainer = Trainer(model, loss, optimizer, scheduler, device, split.outputs, callbacks, augment=augment,
                      options=options, checkpoint_extra=extra, dist_ctx=ctx)
    if t.precise_bn_batches:  # the training set's crops without augmentation
        trainer.bn_loader = DataLoader(train_loader.dataset, batch_size=t.batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(t.seed))
    return trainer, checkpoint, model_name


def check_overfit(model: torch.nn.Module, loss: torch.nn.Module, loader: DataLoader, steps: int, lr: float) -> None:
    """``[trainer] overfit_batch``: the loss on one batch must fall to a tenth in ``steps`` steps."""
    from training.preflight import overfit_one_batch  # noqa: PLC0415

    x, y = next(iter(loader))
    first, last = overfit_one_batch(model, loss, x, y, steps, lr=lr)
    if not last <= first / 10:
        raise RuntimeError(f"overfit_batch: the loss only fell from {first:.4f} to {last:.4f} in {steps} steps on "
                           f"one batch; check the data, targets and model")


def resume_run(cfg: Config, trainer: Trainer, train_loader: DataLoader, run_dir: Path, is_main: bool,
               model_name: str) -> int:
    """``[trainer] resume``: the first epoch still to train (1 for a fresh start)."""
    from utils.checkpoints import load_checkpoint  # noqa: PLC0415
    from training.run_folder import adopt_best_checkpoint, resolve_resume  # noqa: PLC0415

    expect = {"model_name": model_name, "labels": list(trainer.labels),
              "data_process": trainer.checkpoint_extra["data_process"]}
    resume_from = resolve_resume(cfg.trainer.resume, Path(cfg.paths.runs_dir), run_dir, expect)
    if resume_from is None:
        return 1
    payload = load_checkpoint(resume_from)
    if int(payload["epoch"]) >= run_epochs(cfg):
        raise ConfigError(f"run {resume_from.parent.parent.name} already finished its {payload['epoch']} epochs "
                          f"({resume_from}); raise [trainer] n_epochs to continue it")
    start_epoch = trainer.resume(payload, train_loader)
    if is_main:
        adopt_best_checkpoint(resume_from, start_epoch - 1, run_dir)
    log.info("resumed from %s: epochs %d..%d still to train", resume_from, start_epoch, run_epochs(cfg))
    return start_epoch


def evaluate_run(cfg: Config, data: RunData, split: RunSplit, trainer: Trainer, checkpoint: Optional[ModelCheckpoint],
                 run_dir: Path, standardizer: Standardizer) -> dict[str, Any]:
    """The out-of-fold predictions of the best epoch, then the held-out splits scored with the best weights."""
    from dataloader.loaders import window_dataset  # noqa: PLC0415
    from utils.checkpoints import load_checkpoint  # noqa: PLC0415
    from training.evaluation import (  # noqa: PLC0415
        evaluate_splits,
        validation_row_ids,
        write_thresholds,
        write_validation_outputs,
    )

    ids = validation_row_ids(split.val, data.frontend.frames_for(cfg.data.window_s), cfg.data.window_s)
    write_validation_outputs(trainer, split.val, split.outputs, run_dir, cfg.data.fold, ids,
                             cfg.evaluation.detection_precision)
    if checkpoint and checkpoint.best_path.exists():  # the evaluation weights (the EMA's when on)
        trainer.eval_model.load_state_dict(load_checkpoint(checkpoint.best_path)["model"])
    if split.soundscape_val is not None and len(split.soundscape_val):  # thresholds where detections are made
        probs, targets = trainer.predict_dataset(window_dataset(split.soundscape_val, split.labels, cfg.data,
                                                                data.frontend, "first", standardizer),
                                                 cfg.trainer.batch_size * 2)
        write_thresholds(run_dir / "thresholds.csv", targets, probs, split.outputs,
                         cfg.evaluation.detection_precision, source="soundscape_validation")
    return evaluate_splits(trainer, {"val": split.val, "test": split.test}, split.labels, cfg.data, cfg.evaluation,
                           run_dir, lambda df: window_dataset(df, split.labels, cfg.data, data.frontend, "first",
                                                              standardizer),
                           batch_size=cfg.trainer.batch_size * 2)


@dataclass
class TrainingResult:
    """What a training run gives back: the model, its epochs and best one, the split's sizes, the held-out scores
    and the checkpoint to submit with; or, for ``--stage benchmark``, only the timing projection."""

    model_name: str
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)  # the best epoch's metrics (by the monitored score)
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    n_soundscape_val: int = 0
    labels: list[str] = field(default_factory=list)
    untrained_classes: list[str] = field(default_factory=list)
    duration_outliers: int = 0
    evaluation: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> metrics
    checkpoint: Optional[str] = None  # the best checkpoint, when one was written
    compile_seconds: Optional[float] = None
    benchmark: Optional[dict[str, Any]] = None  # --stage benchmark: the projected epoch and run times


def train(cfg: Config, data: RunData, run_dir: Path, ctx: Optional[DistContext] = None,
          benchmark_steps: int = 0) -> TrainingResult:
    """Split, build loaders/model/optimizer, train; returns the training results. Under torchrun (``ctx``) every
    rank trains its share and rank 0 alone logs, checkpoints and writes files. With ``benchmark_steps`` only that
    many steps are timed and the epoch and run times projected (``benchmark``)."""
    from dataloader.curation import classes_without_examples  # noqa: PLC0415
    from dataloader.preprocess import fit_standardizer  # noqa: PLC0415
    from utils.metrics import epoch_rank  # noqa: PLC0415

    ctx = ctx or DistContext()
    t0 = time.perf_counter()
    split = split_run(cfg, data, run_dir, ctx.is_main)
    if ctx.is_main:
        data.skipped.append(split.dropped)
    standardizer = fit_standardizer(split.recordings["train"], data.frontend, data.cache.folder)  # training only
    device = torch.device(f"cuda:{ctx.local_rank}" if training_device(cfg.trainer.device) == "cuda" else "cpu")
    cfg = for_device(cfg, device.type, len(split.train), ctx.world_size)  # a GPU's batch and learning rates
    train_loader, val_loader, extra_val, augment = run_loaders(cfg, data, split, standardizer, device, ctx)
    log.info("%s task: %d train, %d validation, %d test examples, %d classes", cfg.data.task, len(split.train),
             len(split.val), len(split.test), len(split.labels))
    trainer, checkpoint, model_name = build_trainer(cfg, data, split, standardizer, train_loader, device, ctx,
                                                    run_dir, augment)
    if benchmark_steps:
        from training.preflight import benchmark_training  # noqa: PLC0415

        setup = time.perf_counter() - t0

        def finish() -> None:  # rank 0's, as in a run; the one-step model's reports stay in the benchmark's folder
            if ctx.is_main:
                evaluate_run(cfg, data, split, trainer, checkpoint, run_dir, standardizer)

        saved = run_dir / "checkpoints" / "benchmark.pt"  # what the prediction's timing then loads
        bench = {**benchmark_training(trainer, train_loader, val_loader, run_epochs(cfg), benchmark_steps, saved,
                                      extra_val, finish), "seconds_setup": round(setup, 3)}
        return TrainingResult(model_name, benchmark=bench, checkpoint=str(saved))
    start_epoch = resume_run(cfg, trainer, train_loader, run_dir, ctx.is_main, model_name)
    history = trainer.fit(train_loader, val_loader, run_epochs(cfg), start_epoch, extra_val=extra_val)
    evaluation = evaluate_run(cfg, data, split, trainer, checkpoint, run_dir, standardizer) if ctx.is_main else {}
    monitor = cfg.callbacks.model_checkpoint_type
    best = max(history, key=lambda m: epoch_rank(m, monitor) or (-np.inf, -np.inf))
    return TrainingResult(
        model_name, history=history, best=best, n_train=len(split.train), n_val=len(split.val), n_test=len(split.test),
        n_soundscape_val=0 if split.soundscape_val is None else len(split.soundscape_val), labels=split.labels,
        untrained_classes=classes_without_examples(split.train, split.labels), duration_outliers=len(split.dropped),
        evaluation=evaluation, compile_seconds=trainer.compile_seconds,
        checkpoint=str(checkpoint.best_path) if checkpoint and checkpoint.best_path.exists() else None)
