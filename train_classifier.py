"""BirdCLEF pipeline entry point: config.ini -> cached mels -> trained timm CNN -> submission CSV.

    python train_classifier.py [--config config.ini] [--set section.key=value ...]
                               [--stage preprocess|train|predict|all] [--checkpoint best.pt ...]

With no Kaggle data in [paths] data_dir, the embedded demo dataset is generated and used.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from dataloader.run_data import RunData, cache_settings, frames_per_second, prepare_data
from utils.config import Config, ConfigError, load_config, to_ini
from utils.distributed import DistContext, barrier, broadcast, init_from_env, shutdown
from utils.runtime import available_cores, configure_cpu
from utils.run_folder import (adopt_best_checkpoint, create_run_dir, make_run_id, print_summary, resolve_resume,
                              seed_everything, setup_logging, write_summary)

log = logging.getLogger("train_classifier")
HERE = Path(__file__).resolve().parent


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(HERE / "config.ini"), help="INI file (default: config.ini)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set trainer.n_epochs=3")
    p.add_argument("--stage", choices=("preprocess", "train", "predict", "all", "benchmark"), default="all",
                   help="benchmark: time a few training steps and project the epoch and run times, then stop")
    p.add_argument("--benchmark-steps", type=int, default=20, help="training steps timed by --stage benchmark")
    p.add_argument("--checkpoint", nargs="+", help="checkpoint(s) for --stage predict")
    p.add_argument("--reset", action="store_true", help="remove the processed data (the cache folder of this "
                   "config's settings, with the split files written there) and stop")
    return p.parse_args(argv)


def _device(cfg: Config) -> str:
    """``[trainer] device``: cuda when asked or (auto) available, else cpu."""
    import torch  # noqa: PLC0415

    wants_cuda = cfg.trainer.device == "cuda" or (cfg.trainer.device == "auto" and torch.cuda.is_available())
    return "cuda" if wants_cuda else "cpu"


def train(cfg: Config, data: RunData, run_dir: Path, ctx: Optional[DistContext] = None,
          benchmark_steps: int = 0) -> dict[str, Any]:
    """Split, build datasets/model/optimizer, train; returns the training results. Under torchrun (``ctx``)
    every rank trains its share and rank 0 alone logs, checkpoints and writes files. With ``benchmark_steps``
    only that many steps are timed and the epoch and run times projected (``{"benchmark": ...}``)."""
    ctx = ctx or DistContext()
    import torch  # noqa: PLC0415

    from dataloader.augment import BackgroundBank, BatchAugment  # noqa: PLC0415
    from dataloader.dataset import MelWindowDataset  # noqa: PLC0415
    from dataloader.features import DB_FLOOR, Standardizer  # noqa: PLC0415
    from dataloader.loaders import make_eval_loader, make_loaders, window_dataset  # noqa: PLC0415
    from dataloader.preprocess import fit_standardizer  # noqa: PLC0415
    from dataloader.curation import (class_weights, classes_without_examples, event_presence,  # noqa: PLC0415
                                     select_for_run)
    from dataloader.dataset import make_targets  # noqa: PLC0415
    from dataloader.splits import filter_rare_classes, split_key, write_split  # noqa: PLC0415
    from factory.losses import create_loss  # noqa: PLC0415
    from factory.models import create_model  # noqa: PLC0415
    from factory.optimizers import create_optimizer  # noqa: PLC0415
    from factory.schedulers import create_scheduler  # noqa: PLC0415
    from utils.callbacks import CSVLogger, EarlyStopping, MLflowLogger, ModelCheckpoint, NeptuneLogger  # noqa: PLC0415
    from utils.checkpoints import load_checkpoint  # noqa: PLC0415
    from utils.evaluation import evaluate_splits, write_validation_outputs  # noqa: PLC0415
    from utils.metrics import epoch_rank  # noqa: PLC0415
    from utils.trainer import Trainer, TrainOptions  # noqa: PLC0415

    cache, task = data.cache, cfg.data.task
    table = filter_rare_classes(cache.table, cfg.data.min_samples_in_class)
    waveform = cfg.model.family == "wav2vec2"
    settings = cache_settings(cfg)
    fps = frames_per_second(cfg)
    frames = int(round(cfg.data.window_s * fps))
    selection = select_for_run(table, cfg.data, cfg.trainer.seed, frames, classes=data.source.classes)
    if ctx.is_main:
        kept = cache.folder / "splits" / split_key(cfg.data, cfg.paths.data_dir, cfg.trainer.seed, cfg.testing.testing)
        for folder in (run_dir / "split", kept):
            write_split(folder, selection.recordings)
        log.info("split written to %s and %s (train.csv, val.csv, test.csv, split_counts.json)", run_dir / "split",
                 kept)
        data.skipped.append(selection.dropped)
    train_df, val_df, test_df = (selection.parts[k] for k in ("train", "val", "test"))
    extra_rows = {"pseudo-labelled": data.pseudo, "labelled soundscape": data.windows.get("train")}
    for what, rows in extra_rows.items():  # windows cut from soundscapes train, never validate with the focal set
        if rows is not None and len(rows):
            train_df = pd.concat([train_df, rows], ignore_index=True)
            log.info("training on %d %s windows as well", len(rows), what)
    soundscape_val = data.windows.get("val")
    labels = selection.labels
    if waveform:  # raw samples; the model normalises each window itself
        standardizer = Standardizer.identity(1)
    else:  # training recordings only
        standardizer = fit_standardizer(selection.recordings["train"], cfg.data_process, cache.folder)
    device = torch.device(f"cuda:{ctx.local_rank}" if _device(cfg) == "cuda" else "cpu")
    bank = None
    if data.background is not None and len(data.background):
        bg = data.background
        bank = BackgroundBank(MelWindowDataset(bg["entry"], np.zeros((len(bg), 0), np.float32), frames, "random",
                                               cfg.data.pad_mode, standardizer,
                                               list(zip(bg["clip_mean"], bg["clip_std"]))))
    augment = BatchAugment(cfg.augmentation, None if waveform else standardizer.units_per_db(), background=bank,
                           domain="waveform" if waveform else "mel")
    in_workers = device.type == "cpu" and cfg.trainer.num_workers > 0  # on a GPU it runs on the GPU
    pad_value = 0.0 if waveform else DB_FLOOR
    train_loader, val_loader = make_loaders(train_df, val_df, labels, cfg.data, cfg.trainer, frames, standardizer,
                                            augment=augment if in_workers else None, rank=ctx.rank,
                                            world_size=ctx.world_size, pad_value=pad_value, frames_per_second=fps)
    extra_val = {}
    if soundscape_val is not None and len(soundscape_val):  # scored each epoch as soundscape_val_*
        extra_val["soundscape"] = make_eval_loader(soundscape_val, labels, cfg.data, cfg.trainer, frames, standardizer,
                                                   ctx.rank, ctx.world_size, pad_value, fps)
    elif cfg.callbacks.model_checkpoint_type.startswith("soundscape"):
        raise ConfigError(f"[callbacks] model_checkpoint_type = {cfg.callbacks.model_checkpoint_type}: no labelled "
                           f"soundscape windows validate in this run (source {data.source.name}, [data] "
                           f"soundscape_labels = {cfg.data.soundscape_labels}); allowed: val_score, val_loss")
    log.info("%s task: %d train, %d validation, %d test examples, %d classes", task, len(train_df), len(val_df),
             len(test_df), len(labels))
    bins = cfg.data.event_bins if task == "events" else 0
    outputs = [f"{c}@{k}" for c in labels for k in range(bins)] if bins else labels  # events: class-major bins

    model_name = cfg.testing.testing_model if cfg.testing.testing and not waveform else cfg.model.type
    n_epochs = cfg.testing.testing_epochs if cfg.testing.testing else cfg.trainer.n_epochs
    if waveform:
        from factory.wav2vec2 import create_wav2vec2  # noqa: PLC0415 - transformers only when used

        model = create_wav2vec2(model_name, len(labels), cfg.model.transfer_learning, cfg.model.pretrained_path,
                                cfg.model.freeze_feature_encoder)
        model_kwargs = {"family": "wav2vec2", "hf_config": model.hf.config.to_dict()}
    else:
        model_kwargs = {"head": cfg.model.head, "in_chans": cfg.model.in_chans}
        if bins:
            model_kwargs["event_bins"] = bins
        model = create_model(model_name, num_classes=len(labels), transfer_learning=cfg.model.transfer_learning,
                             pretrained_path=cfg.model.pretrained_path, drop_rate=cfg.model.drop_rate,
                             drop_path_rate=cfg.model.drop_path_rate, **model_kwargs)
    agent = cfg.agent
    optimizer = create_optimizer(agent.optimizer, model, lr=agent.lr_warmup_end, weight_decay=agent.weight_decay,
                                 head_lr_scale=agent.head_lr_scale, layer_lr_decay=agent.layer_lr_decay)
    steps_per_epoch = -(-len(train_loader) // cfg.trainer.accumulate_steps)  # optimizer steps
    scheduler = create_scheduler(agent.lr_decay_type if agent.lr_decay else "none", optimizer,
                                 total_steps=steps_per_epoch * n_epochs,
                                 warmup_steps=int(round(agent.warmup_epochs * steps_per_epoch)),
                                 steps_per_epoch=steps_per_epoch, lr_start=agent.lr_start, lr_peak=agent.lr_warmup_end,
                                 lr_end=agent.lr_end, gamma=agent.exp_gamma, step_epochs=agent.step_epochs,
                                 step_gamma=agent.step_gamma, plateau_patience=agent.plateau_patience,
                                 plateau_factor=agent.plateau_factor)
    weights = None
    if cfg.data.balance == "weights":
        clip_targets = event_presence(train_df, labels) if bins else make_targets(train_df, labels, cfg.data)
        weights = [w for w in class_weights(clip_targets, task) for _ in range(max(bins, 1))]
        log.info("balance = weights: %s", ", ".join(f"{c} {w:.2f}" for c, w in zip(labels, weights[::max(bins, 1)])))
    loss = create_loss(agent.loss, class_weights=weights, label_smoothing=agent.label_smoothing,
                       focal_gamma=agent.focal_gamma,
                       focal_alpha=agent.focal_alpha, focal_weight=agent.focal_weight,
                       asl_gamma_pos=agent.asl_gamma_pos, asl_gamma_neg=agent.asl_gamma_neg, asl_clip=agent.asl_clip)
    extra = {"config": cfg.to_dict(), "model_name": model_name, "model_kwargs": model_kwargs,
             "input": "waveform" if waveform else "mel",
             "data_process": dataclasses.asdict(settings),
             "window_s": cfg.data.window_s, "pad_mode": cfg.data.pad_mode,
             "standardizer": standardizer.to_dict(), "task": task, "classes": labels}
    monitor = cfg.callbacks.model_checkpoint_type
    callbacks: list = [CSVLogger(run_dir)]
    checkpoint = ModelCheckpoint(run_dir / "checkpoints", monitor, cfg.callbacks.model_checkpoint_verbose,
                                 top_k=cfg.callbacks.checkpoint_top_k) if cfg.callbacks.model_checkpoint else None
    if checkpoint:
        callbacks.append(checkpoint)
    if cfg.trainer.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor, cfg.trainer.early_stopping_patience))
    if cfg.callbacks.mlflow_logger:
        callbacks.append(MLflowLogger(cfg.callbacks.mlflow_tracking_uri, cfg.callbacks.mlflow_experiment, run_dir,
                                      cfg.to_dict(), name=run_dir.name))
    if cfg.callbacks.neptune_logger:
        callbacks.append(NeptuneLogger(cfg.callbacks.neptune_project, cfg.callbacks.neptune_mode, run_dir,
                                       cfg.to_dict(), name=run_dir.name))
    options = TrainOptions(channels_last=cfg.trainer.channels_last and not waveform,
                           amp=cfg.trainer.amp == "true" or (cfg.trainer.amp == "auto" and device.type == "cuda"),
                           compile=cfg.trainer.compile, grad_clip=cfg.trainer.grad_clip,
                           accumulate_steps=cfg.trainer.accumulate_steps,
                           activation="softmax" if agent.loss == "ce" else "sigmoid", lr_verbose=agent.lr_verbose,
                           monitor=monitor)
    if not ctx.is_main:
        callbacks, checkpoint = [], None  # only rank 0 logs and checkpoints
    if cfg.trainer.overfit_batch:
        from utils.preflight import overfit_one_batch  # noqa: PLC0415

        x, y = next(iter(train_loader))
        first, last = overfit_one_batch(model, loss, x, y, cfg.trainer.overfit_batch, lr=agent.lr_warmup_end)
        if not last <= first / 10:
            raise RuntimeError(f"overfit_batch: the loss only fell from {first:.4f} to {last:.4f} in "
                               f"{cfg.trainer.overfit_batch} steps on one batch; check the data, targets and model")
    trainer = Trainer(model, loss, optimizer, scheduler, device, outputs, callbacks,
                      augment=None if in_workers else augment, options=options, checkpoint_extra=extra, dist_ctx=ctx)
    if benchmark_steps:
        from utils.preflight import estimate_run_time  # noqa: PLC0415

        return {"benchmark": estimate_run_time(trainer, train_loader, val_loader, n_epochs, benchmark_steps)}
    start_epoch = 1
    expect = {"model_name": model_name, "labels": list(outputs), "data_process": dataclasses.asdict(settings)}
    resume_from = resolve_resume(cfg.trainer.resume, Path(cfg.paths.runs_dir), run_dir, expect)
    if resume_from is not None:
        payload = load_checkpoint(resume_from)
        if int(payload["epoch"]) >= n_epochs:
            raise ConfigError(f"run {resume_from.parent.parent.name} already finished its {payload['epoch']} epochs "
                              f"({resume_from}); raise [trainer] n_epochs to continue it")
        start_epoch = trainer.resume(payload, train_loader)
        if ctx.is_main:
            adopt_best_checkpoint(resume_from, start_epoch - 1, run_dir)
        log.info("resumed from %s: epochs %d..%d still to train", resume_from, start_epoch, n_epochs)
    history = trainer.fit(train_loader, val_loader, n_epochs, start_epoch, extra_val=extra_val)
    evaluation: dict[str, Any] = {}
    if ctx.is_main:
        write_validation_outputs(trainer, val_df, outputs, run_dir, cfg.data.fold)
        if checkpoint and checkpoint.best_path.exists():  # held-out splits scored with the best epoch's weights
            trainer.model.load_state_dict(load_checkpoint(checkpoint.best_path)["model"])
        evaluation = evaluate_splits(trainer, {"val": val_df, "test": test_df}, labels, cfg.data, cfg.evaluation,
                                     run_dir, lambda df: window_dataset(df, labels, cfg.data, frames, "first",
                                                                        standardizer, pad_value, fps),
                                     batch_size=cfg.trainer.batch_size * 2)
    best = max(history, key=lambda m: epoch_rank(m, monitor) or (-np.inf, -np.inf))
    return {"history": history, "best": best, "n_train": len(train_df), "n_val": len(val_df), "labels": labels,
            "untrained_classes": classes_without_examples(train_df, labels),
            "duration_outliers": len(selection.dropped),
            "n_soundscape_val": 0 if soundscape_val is None else len(soundscape_val),
            "n_test": len(test_df), "evaluation": evaluation,
            "checkpoint": str(checkpoint.best_path) if checkpoint and checkpoint.best_path.exists() else None,
            "model_name": model_name}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return 2
    if args.reset:
        return reset_processed(cfg)
    if args.stage == "predict" and not args.checkpoint:
        log.error("--stage predict needs --checkpoint PATH [PATH ...]")
        return 2
    t0 = time.perf_counter()
    ctx = init_from_env(use_cuda=_device(cfg) == "cuda")
    from dataloader.sources import DataSourceError  # noqa: PLC0415
    from dataloader.cache_faults import CacheEnvironmentError  # noqa: PLC0415
    from utils.checkpoints import CheckpointError  # noqa: PLC0415

    try:
        return _run(cfg, args, ctx, t0)
    except (DataSourceError, ConfigError, CheckpointError) as exc:  # data, setting or checkpoint that cannot be used
        log.error("%s", exc)
        return 2
    except CacheEnvironmentError as exc:  # the machine stopped the cache: nothing lost, the next run retries
        log.error("%s", exc)
        return 1
    finally:
        shutdown(ctx)


def _run(cfg: Config, args: argparse.Namespace, ctx: DistContext, t0: float) -> int:
    """The stages of one run (every rank under torchrun; rank 0 alone writes the run folder)."""
    threads = cfg.trainer.threads or (max(1, available_cores() // ctx.world_size) if ctx.enabled else 0)
    configure_cpu(threads)
    seed_everything(cfg.trainer.seed)
    model_name = cfg.testing.testing_model if cfg.testing.testing else cfg.model.type
    run_dir = None
    if ctx.is_main:
        run_dir = create_run_dir(cfg.paths.runs_dir, make_run_id(model_name, cfg.testing.testing))
        setup_logging(run_dir / "train.log")
        (run_dir / "config.ini").write_text(to_ini(cfg))
    else:
        logging.getLogger().setLevel(logging.WARNING)  # one voice: rank 0's
    run_dir = Path(broadcast(ctx, str(run_dir) if run_dir else None))
    run_id = run_dir.name
    log.info("run %s: stage %s, folder %s%s", run_id, args.stage, run_dir,
             f" (rank {ctx.rank} of {ctx.world_size})" if ctx.enabled else "")
    summary: dict[str, Any] = {"run_id": run_id, "run_dir": str(run_dir), "stage": args.stage,
                               "testing": cfg.testing.testing}
    data = None
    if args.stage != "predict":
        if not ctx.is_main:
            barrier(ctx)  # rank 0 builds the cache first; the others then find it complete
        data = prepare_data(cfg)
        if ctx.is_main:
            barrier(ctx)
    if data is not None and ctx.is_main:
        data.write_reports(run_dir)
        summary.update(data.summary(), task=cfg.data.task)
        cache = data.cache
        print(f"preprocess: decoded {cache.decoded}, reused {cache.reused}, skipped {len(cache.skipped)}, "
              f"pruned {cache.pruned} (cache {cache.folder})")
    checkpoints = args.checkpoint
    if args.stage == "benchmark":
        bench = train(cfg, data, run_dir, ctx, benchmark_steps=args.benchmark_steps)["benchmark"]
        if ctx.is_main:
            print(json.dumps({"run_id": run_id, "model": model_name, **bench}), flush=True)
            write_summary(run_dir, {**summary, "benchmark": bench})
        return 0
    if args.stage in ("train", "all"):
        result = train(cfg, data, run_dir, ctx)
        if not ctx.is_main:
            return 0
        summary.update(val_score=result["best"]["val_score"], best_epoch=result["best"]["epoch"],
                       soundscape_val_score=result["best"].get("soundscape_val_score"),
                       n_train=result["n_train"], n_val=result["n_val"], n_test=result["n_test"],
                       n_soundscape_val=result["n_soundscape_val"],
                       classes_without_training_examples=len(result["untrained_classes"]),
                       untrained_classes=result["untrained_classes"],
                       epochs=len(result["history"]), model=result["model_name"], checkpoint=result["checkpoint"],
                       **{f"{split}_metrics": m for split, m in result["evaluation"].items()})
        summary["duration_outliers"] = result["duration_outliers"]
        data.write_reports(run_dir)  # duration outliers join the skipped files
        checkpoints = [result["checkpoint"]] if result["checkpoint"] else None
    if not ctx.is_main:
        return 0
    if args.stage == "all" and data is not None and not data.submits:
        log.info("[data] source = %s: no soundscapes to submit; the held-out splits were scored above",
                 data.source.name)
    elif args.stage in ("predict", "all"):
        if not checkpoints:
            log.error("no checkpoint to predict with ([callbacks] model_checkpoint = false?)")
            return 1
        from dataloader.sources import load_source  # noqa: PLC0415
        from inference.competition import submit  # noqa: PLC0415

        source = data.source if data else load_source(cfg.data, cfg.paths)
        if source.test_dir is None:
            log.error("[data] source = %s has no test soundscapes to write a submission for", source.name)
            return 1
        summary.update(submit(checkpoints, source, Path(cfg.paths.submissions_dir) / f"{run_id}.csv",
                              run_dir / "submission.csv", _device(cfg), cfg.trainer.batch_size * 2))
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_summary(run_dir, summary)
    print_summary(summary)
    return 0


def reset_processed(cfg: Config) -> int:
    """``--reset``: remove this config's cache folder (mels or waveforms, statistics, split files); runs stay."""
    from dataloader.preprocess import remove_cache  # noqa: PLC0415

    folder = remove_cache(cfg.paths.cache_dir, cache_settings(cfg))
    print(f"removed {folder}" if folder else f"nothing to remove in {cfg.paths.cache_dir} for these settings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
