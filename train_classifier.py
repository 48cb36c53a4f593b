"""BirdCLEF pipeline entry point: config.ini -> cached mels -> trained timm CNN -> submission CSV.

    python train_classifier.py [--config config.ini] [--set section.key=value ...]
                               [--stage preprocess|train|predict|all] [--checkpoint best.pt ...]

With no Kaggle data in [paths] data_dir, the embedded demo dataset is generated and used.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from utils.config import Config, ConfigError, load_config, to_ini
from utils.distributed import DistContext, barrier, broadcast, init_from_env, shutdown
from utils.runtime import available_cores, configure_cpu
from utils.run_folder import create_run_dir, make_run_id, seed_everything, setup_logging, write_summary

log = logging.getLogger("train_classifier")
HERE = Path(__file__).resolve().parent
DRY_RUN_FILES = 3  # unlabeled soundscapes predicted when test_soundscapes/ is empty


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(HERE / "config.ini"), help="INI file (default: config.ini)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set trainer.n_epochs=3")
    p.add_argument("--stage", choices=("preprocess", "train", "predict", "all"), default="all")
    p.add_argument("--checkpoint", nargs="+", help="checkpoint(s) for --stage predict")
    return p.parse_args(argv)


def _device(cfg: Config) -> str:
    """``[trainer] device``: cuda when asked or (auto) available, else cpu."""
    import torch  # noqa: PLC0415

    wants_cuda = cfg.trainer.device == "cuda" or (cfg.trainer.device == "auto" and torch.cuda.is_available())
    return "cuda" if wants_cuda else "cpu"


def cache_settings(cfg: Config) -> Any:
    """What the cache holds: mels from ``[data_process]``, or 16 kHz waveforms for ``[model] family = wav2vec2``."""
    if cfg.model.family == "wav2vec2":
        from dataloader.preprocess import WaveformSettings  # noqa: PLC0415
        from factory.wav2vec2 import SAMPLE_RATE  # noqa: PLC0415

        return WaveformSettings(SAMPLE_RATE, cfg.data_process.mode, cfg.data_process.max_length_s)
    return cfg.data_process


def prepare_data(cfg: Config) -> dict[str, Any]:
    """Resolve the data source, list recordings, build (or reuse) the cache (mels, or waveforms for Wav2Vec2)."""
    from dataloader.preprocess import build_cache  # noqa: PLC0415
    from dataloader.sources import load_recordings, merge_duplicates, resolve_data_dir  # noqa: PLC0415
    from dataloader.splits import seeded_sample  # noqa: PLC0415

    data_dir, is_demo = resolve_data_dir(cfg.data.source, cfg.paths.data_dir, cfg.paths.demo_dir,
                                         cfg.data.demo_seed, cfg.data.demo_scale, cfg.data.num_workers)
    recordings, merged = merge_duplicates(load_recordings(data_dir))
    if cfg.testing.testing:
        recordings = seeded_sample(recordings, cfg.testing.data_samples_for_testing, cfg.trainer.seed)
        log.info("testing mode: %d recordings of %d classes", len(recordings), recordings["primary_label"].nunique())
    cache = build_cache(recordings, cache_settings(cfg), cfg.paths.cache_dir, cfg.data.num_workers,
                        prune_under=None if cfg.testing.testing else data_dir / "train_audio")  # a subset prunes nothing
    background = None
    aug = cfg.augmentation
    if aug.data_augmentation and aug.augment_background and cfg.model.family != "wav2vec2":
        files = sorted(str(p) for p in (data_dir / "unlabeled_soundscapes").glob("*.ogg"))
        if not files:
            log.warning("augment_background: no unlabeled_soundscapes/*.ogg in %s, no background mixing", data_dir)
        else:
            picked = np.random.default_rng(cfg.trainer.seed).permutation(len(files))[:aug.background_files]
            table = pd.DataFrame({"path": [files[i] for i in sorted(picked)]})
            background = build_cache(table, cfg.data_process, cfg.paths.cache_dir, cfg.data.num_workers).table
            log.info("background mixing: %d unlabeled soundscapes", len(background))
    return {"data_dir": data_dir, "is_demo": is_demo, "cache": cache, "merged": merged, "background": background}


def train(cfg: Config, data: dict[str, Any], run_dir: Path, ctx: Optional[DistContext] = None) -> dict[str, Any]:
    """Split, build datasets/model/optimizer, train; returns the training results. Under torchrun (``ctx``)
    every rank trains its share and rank 0 alone logs, checkpoints and writes files."""
    ctx = ctx or DistContext()
    import torch  # noqa: PLC0415

    from dataloader.augment import BackgroundBank, BatchAugment  # noqa: PLC0415
    from dataloader.dataset import MelWindowDataset  # noqa: PLC0415
    from dataloader.features import DB_FLOOR, Standardizer  # noqa: PLC0415
    from dataloader.loaders import make_loaders  # noqa: PLC0415
    from dataloader.preprocess import fit_standardizer  # noqa: PLC0415
    from dataloader.splits import cap_per_class, filter_rare_classes, train_val_split  # noqa: PLC0415
    from factory.losses import create_loss  # noqa: PLC0415
    from factory.models import create_model  # noqa: PLC0415
    from factory.optimizers import create_optimizer  # noqa: PLC0415
    from factory.schedulers import create_scheduler  # noqa: PLC0415
    from utils.callbacks import CSVLogger, EarlyStopping, MLflowLogger, ModelCheckpoint, NeptuneLogger  # noqa: PLC0415
    from utils.checkpoints import load_checkpoint  # noqa: PLC0415
    from utils.trainer import Trainer, TrainOptions  # noqa: PLC0415

    cache = data["cache"]
    table = filter_rare_classes(cache.table, cfg.data.min_samples_in_class)
    train_df, val_df = train_val_split(table, cfg.data.n_folds, cfg.data.fold, cfg.trainer.seed)
    if len(val_df) == 0:
        raise RuntimeError("the validation fold is empty: too few recordings per class for n_folds")
    train_df = cap_per_class(train_df, cfg.data.max_recordings_per_class, cfg.trainer.seed)
    labels = sorted(table["primary_label"].unique())
    waveform = cfg.model.family == "wav2vec2"
    settings = cache_settings(cfg)
    if waveform:  # raw samples; the model normalises each window itself
        frames = int(round(cfg.data.window_s * settings.sample_rate))
        standardizer = Standardizer.identity(1)
    else:
        frames = int(round(cfg.data.window_s * cfg.data_process.sample_rate / cfg.data_process.hop_length))
        standardizer = fit_standardizer(train_df, cfg.data_process, cache.folder)  # training recordings only
    device = torch.device(f"cuda:{ctx.local_rank}" if _device(cfg) == "cuda" else "cpu")
    bank = None
    if data.get("background") is not None and len(data["background"]):
        bg = data["background"]
        bank = BackgroundBank(MelWindowDataset(bg["entry"], np.zeros((len(bg), 0), np.float32), frames, "random",
                                               cfg.data.pad_mode, standardizer,
                                               list(zip(bg["clip_mean"], bg["clip_std"]))))
    augment = BatchAugment(cfg.augmentation, None if waveform else standardizer.units_per_db(), background=bank,
                           domain="waveform" if waveform else "mel")
    in_workers = device.type == "cpu" and cfg.trainer.num_workers > 0  # on a GPU it runs on the GPU
    train_loader, val_loader = make_loaders(train_df, val_df, labels, cfg.data, cfg.trainer, frames, standardizer,
                                            augment=augment if in_workers else None, rank=ctx.rank,
                                            world_size=ctx.world_size, pad_value=0.0 if waveform else DB_FLOOR)
    log.info("split fold %d/%d: %d train, %d validation recordings, %d classes", cfg.data.fold, cfg.data.n_folds,
             len(train_df), len(val_df), len(labels))

    model_name = cfg.testing.testing_model if cfg.testing.testing and not waveform else cfg.model.type
    n_epochs = cfg.testing.testing_epochs if cfg.testing.testing else cfg.trainer.n_epochs
    if waveform:
        from factory.wav2vec2 import create_wav2vec2  # noqa: PLC0415 - transformers only when used

        model = create_wav2vec2(model_name, len(labels), cfg.model.transfer_learning, cfg.model.pretrained_path,
                                cfg.model.freeze_feature_encoder)
        model_kwargs = {"family": "wav2vec2", "hf_config": model.hf.config.to_dict()}
    else:
        model_kwargs = {"head": cfg.model.head, "in_chans": cfg.model.in_chans}
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
    loss = create_loss(agent.loss, label_smoothing=agent.label_smoothing, focal_gamma=agent.focal_gamma,
                       focal_alpha=agent.focal_alpha, focal_weight=agent.focal_weight,
                       asl_gamma_pos=agent.asl_gamma_pos, asl_gamma_neg=agent.asl_gamma_neg, asl_clip=agent.asl_clip)
    extra = {"config": cfg.to_dict(), "model_name": model_name, "model_kwargs": model_kwargs,
             "input": "waveform" if waveform else "mel",
             "data_process": dataclasses.asdict(settings),
             "window_s": cfg.data.window_s, "pad_mode": cfg.data.pad_mode,
             "standardizer": standardizer.to_dict()}
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
    trainer = Trainer(model, loss, optimizer, scheduler, device, labels, callbacks,
                      augment=None if in_workers else augment, options=options, checkpoint_extra=extra, dist_ctx=ctx)
    start_epoch = 1
    resume_from = resolve_resume(cfg.trainer.resume, Path(cfg.paths.runs_dir), run_dir)
    if resume_from is not None:
        start_epoch = trainer.resume(load_checkpoint(resume_from), train_loader)
        if ctx.is_main:
            adopt_best_checkpoint(resume_from, start_epoch - 1, run_dir)
        log.info("resumed from %s: epochs %d..%d still to train", resume_from, start_epoch, n_epochs)
    history = trainer.fit(train_loader, val_loader, n_epochs, start_epoch)
    if ctx.is_main:
        write_validation_outputs(trainer, val_df, labels, run_dir, cfg.data.fold)
    sign = -1.0 if monitor.endswith("loss") else 1.0
    best = max(history, key=lambda m: -np.inf if np.isnan(m[monitor]) else sign * m[monitor])
    return {"history": history, "best": best, "n_train": len(train_df), "n_val": len(val_df), "labels": labels,
            "checkpoint": str(checkpoint.best_path) if checkpoint and checkpoint.best_path.exists() else None,
            "model_name": model_name}


def write_validation_outputs(trainer: Any, val_df: pd.DataFrame, labels: list[str], run_dir: Path, fold: int) -> None:
    """The best epoch's out-of-fold predictions (``val_predictions.csv``) and per-class ROC-AUC / AP
    (``per_class_metrics.csv`` and ``.png``) in the run folder."""
    from utils.metrics import per_class_table, plot_per_class  # noqa: PLC0415

    epoch, probs, targets = trainer.best_val or (trainer.history[-1]["epoch"], *trainer.last_val)
    val_pred = pd.DataFrame(probs, columns=labels)
    val_pred.insert(0, "filename", list(val_df["filename"]))
    val_pred.insert(1, "primary_label", list(val_df["primary_label"]))
    val_pred.insert(2, "fold", fold)
    val_pred.to_csv(run_dir / "val_predictions.csv", index=False, float_format="%.5f")
    table = per_class_table((np.nan_to_num(targets) >= 1.0).astype(np.int8), probs, labels)
    table.to_csv(run_dir / "per_class_metrics.csv", index=False, float_format="%.5f")
    plot_per_class(table, run_dir / "per_class_metrics.png", f"validation at epoch {epoch}, per class (positives)")


def resolve_resume(resume: str, runs_dir: Path, run_dir: Path) -> Optional[Path]:
    """``[trainer] resume``: a checkpoint path, ``auto`` (the newest ``last.pt`` under ``runs_dir``, other than
    this run's), or empty (fresh start)."""
    if not resume:
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise ConfigError(f"[trainer] resume = {resume}: no such checkpoint")
        return path
    found = sorted((p for p in runs_dir.glob("*/checkpoints/last.pt") if p.parent.parent != run_dir),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        log.warning("[trainer] resume = auto: no last.pt under %s, starting fresh", runs_dir)
        return None
    return found[-1]


def adopt_best_checkpoint(resume_from: Path, epoch: int, run_dir: Path) -> None:
    """A resumed run keeps the old run's ``best.pt`` when it comes from an epoch up to the one resumed from
    (its history, restored from the checkpoint, says which epoch was best so far)."""
    import shutil  # noqa: PLC0415

    from utils.checkpoints import load_checkpoint  # noqa: PLC0415

    folder = next((p for p in resume_from.parents if p.name == "checkpoints"), None)
    best = folder / "best.pt" if folder is not None else None
    if best is not None and best.is_file() and load_checkpoint(best)["epoch"] <= epoch:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        shutil.copy2(best, run_dir / "checkpoints" / "best.pt")


def predict(checkpoints: list[str], data_dir: Path, run_id: str, cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Predict the test soundscapes (or, when there are none, a few unlabeled ones as a dry run)."""
    from dataloader.demo import GROUND_TRUTH_FILE  # noqa: PLC0415
    from dataloader.sources import submission_labels  # noqa: PLC0415
    from inference.predict import SoundscapePredictor, predict_folder  # noqa: PLC0415
    from inference.submission import write_submission  # noqa: PLC0415
    from utils.metrics import competition_score  # noqa: PLC0415

    columns = submission_labels(data_dir)
    audio_dir, limit = data_dir / "test_soundscapes", None
    if not any(audio_dir.glob("*.ogg")):
        audio_dir, limit = data_dir / "unlabeled_soundscapes", DRY_RUN_FILES
        log.info("test_soundscapes/ is empty (as outside Kaggle scoring): dry run on %d files of %s", limit, audio_dir)
    predictor = SoundscapePredictor(checkpoints, device=_device(cfg), batch_size=cfg.trainer.batch_size * 2)
    t0 = time.perf_counter()
    frame = predict_folder(predictor, audio_dir, columns, limit=limit)
    seconds = time.perf_counter() - t0
    out = write_submission(frame, columns, Path(cfg.paths.submissions_dir) / f"{run_id}.csv")
    frame.to_csv(run_dir / "submission.csv", index=False, float_format="%.6f")
    result: dict[str, Any] = {"submission": str(out), "submission_rows": len(frame),
                              "predict_windows_per_s": round(len(frame) / max(seconds, 1e-9), 1)}
    truth_path = data_dir / GROUND_TRUTH_FILE
    if truth_path.is_file() and audio_dir.name == "test_soundscapes":
        truth = pd.read_csv(truth_path)
        result["soundscape_score"] = round(competition_score(truth, frame[frame["row_id"].isin(truth["row_id"])],
                                                             "row_id"), 6)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return 2
    if args.stage == "predict" and not args.checkpoint:
        log.error("--stage predict needs --checkpoint PATH [PATH ...]")
        return 2
    t0 = time.perf_counter()
    ctx = init_from_env(use_cuda=_device(cfg) == "cuda")
    try:
        return _run(cfg, args, ctx, t0)
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
        cache = data["cache"]
        pd.concat([cache.skipped, data["merged"]], ignore_index=True).to_csv(run_dir / "skipped_files.csv",
                                                                             index=False)
        summary.update(data_dir=str(data["data_dir"]), data_source="demo" if data["is_demo"] else "birdclef",
                       cache=str(cache.folder), decoded=cache.decoded, reused=cache.reused, pruned=cache.pruned,
                       skipped=len(cache.skipped), merged_duplicates=len(data["merged"]),
                       recordings=len(cache.table))
        print(f"preprocess: decoded {cache.decoded}, reused {cache.reused}, skipped {len(cache.skipped)}, "
              f"pruned {cache.pruned} (cache {cache.folder})")
    checkpoints = args.checkpoint
    if args.stage in ("train", "all"):
        result = train(cfg, data, run_dir, ctx)
        if not ctx.is_main:
            return 0
        summary.update(val_score=result["best"]["val_score"], best_epoch=result["best"]["epoch"],
                       n_train=result["n_train"], n_val=result["n_val"], epochs=len(result["history"]),
                       model=result["model_name"], checkpoint=result["checkpoint"])
        checkpoints = [result["checkpoint"]] if result["checkpoint"] else None
    if not ctx.is_main:
        return 0
    if args.stage in ("predict", "all"):
        if not checkpoints:
            log.error("no checkpoint to predict with ([callbacks] model_checkpoint = false?)")
            return 1
        data_dir = data["data_dir"] if data else _data_dir_for_predict(cfg)
        summary.update(predict(checkpoints, Path(data_dir), run_id, cfg, run_dir))
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_summary(run_dir, summary)
    _print_summary(summary)
    return 0


def _data_dir_for_predict(cfg: Config) -> Path:
    from dataloader.sources import resolve_data_dir  # noqa: PLC0415

    return resolve_data_dir(cfg.data.source, cfg.paths.data_dir, cfg.paths.demo_dir, cfg.data.demo_seed,
                            cfg.data.demo_scale, cfg.data.num_workers)[0]


def _print_summary(s: dict[str, Any]) -> None:
    lines = ["", "=" * 70, f"run {s['run_id']} ({s['stage']}) finished in {s['wall_seconds']:.0f} s"]
    for key in ("data_source", "recordings", "skipped", "n_train", "n_val", "epochs", "val_score",
                "soundscape_score", "run_dir", "checkpoint", "submission"):
        if s.get(key) is not None:
            lines.append(f"  {key:<17} {s[key]}")
    lines.append("=" * 70)
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
