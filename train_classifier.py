"""BirdCLEF pipeline entry point: config.ini -> cached features -> trained model -> submission CSV.

    python train_classifier.py [--config config.ini] [--set section.key=value ...]
                               [--stage preprocess|train|predict|all] [--checkpoint best.pt ...]

With no Kaggle data in [paths] data_dir, the embedded demo dataset is generated and used. This file only wires
the stages: the registries (sources, model families, losses, optimizers, schedulers) and the run-folder helpers
do the work (dataloader/run_data.py prepares the data, training/train_stage.py trains, inference/competition.py
submits).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from training.config import Config, ConfigError, demo_overrides, load_config, to_ini
from training.distributed import DistContext, barrier, broadcast, init_from_env, shutdown
from training.run_folder import create_run_dir, make_run_id, print_summary, seed_everything, setup_logging, write_summary
from utils.runtime import available_cores, configure_cpu, training_device

if TYPE_CHECKING:
    from dataloader.run_data import RunData

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
    p.add_argument("--cv", action="store_true", help="cross-validation: train every fold of [data] n_folds (or of "
                   "a csv's fold column) and write the per-fold and mean ± std table (runs_dir/cv-<time>/); "
                   "with --stage benchmark, one fold is timed and every fold projected")
    p.add_argument("--rounds", type=int, help="self-training: the teacher, then this many rounds of students on the "
                   "labels and out-of-fold soft pseudo-labels of the unlabeled pool (sets [self_training] rounds; "
                   "runs_dir/selftrain-<time>/rounds.csv is the table of every round)")
    p.add_argument("--resume-loop", metavar="DIR|auto", help="continue a killed self-training loop (its folder, or "
                   "auto = the newest) at the round and student where it stopped")
    p.add_argument("--reset", action="store_true", help="remove the processed data (the cache folder of this "
                   "config's settings, with the split files written there) and stop")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    overrides = args.overrides + ([f"self_training.rounds={args.rounds}"] if args.rounds is not None else [])
    try:
        cfg = load_config(args.config, overrides)
        demo = demo_overrides(cfg, overrides)
        if demo:  # the demo's own settings, under the user's --set (start_run says so in the run's log)
            cfg = load_config(args.config, [*demo, *overrides])
        args.demo_settings = demo
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return 2
    if args.reset:
        return reset_processed(cfg)
    if args.stage == "predict" and not args.checkpoint:
        log.error("--stage predict needs --checkpoint PATH [PATH ...]")
        return 2
    t0 = time.perf_counter()
    ctx = init_from_env(use_cuda=training_device(cfg.trainer.device) == "cuda")
    from dataloader.cache_faults import CacheEnvironmentError  # noqa: PLC0415
    from dataloader.sources import DataSourceError  # noqa: PLC0415
    from utils.checkpoints import CheckpointError  # noqa: PLC0415

    from training.multi_run import RunFailed, cross_validate, self_train  # noqa: PLC0415

    try:
        if cfg.self_training.rounds or args.resume_loop:
            return self_train(cfg, args, ctx, run)
        return cross_validate(cfg, args, ctx, t0, run) if args.cv else run(cfg, args, ctx, t0)
    except (DataSourceError, ConfigError, CheckpointError) as exc:  # data, setting or checkpoint that cannot be used
        log.error("%s", exc)
        return 2
    except RunFailed as exc:  # a fold or a student: its own run said why
        log.error("%s", exc)
        return exc.code
    except CacheEnvironmentError as exc:  # the machine stopped the cache: nothing lost, the next run retries
        log.error("%s", exc)
        return 1
    finally:
        shutdown(ctx)


def start_run(cfg: Config, args: argparse.Namespace, ctx: DistContext) -> Path:
    """Threads, seeds, and the run folder (rank 0 creates it, logs into it, writes the resolved config)."""
    configure_cpu(cfg.trainer.threads or (max(1, available_cores() // ctx.world_size) if ctx.enabled else 0))
    seed_everything(cfg.trainer.seed)
    run_dir = None
    if ctx.is_main:
        from factory.families import get_family  # noqa: PLC0415

        model_name = get_family(cfg.model.family).model_name(cfg)
        run_dir = create_run_dir(cfg.paths.runs_dir, make_run_id(model_name, cfg.testing.testing))
        setup_logging(run_dir / "train.log")
        (run_dir / "config.ini").write_text(to_ini(cfg))
    else:
        logging.getLogger().setLevel(logging.WARNING)  # one voice: rank 0's
    run_dir = Path(broadcast(ctx, str(run_dir) if run_dir else None))
    log.info("run %s: stage %s, folder %s%s", run_dir.name, args.stage, run_dir,
             f" (rank {ctx.rank} of {ctx.world_size})" if ctx.enabled else "")
    if getattr(args, "demo_settings", None):
        log.info("embedded demo: its own settings %s (config.ini's defaults are for Kaggle data; --set any of them "
                 "to override)", " ".join(args.demo_settings))
    return run_dir


def preprocess_stage(cfg: Config, ctx: DistContext, run_dir: Path, summary: dict[str, Any]) -> RunData:
    """The run's data, cached with the model family's front end (rank 0 first; the others then reuse it)."""
    from dataloader.run_data import prepare_data  # noqa: PLC0415
    from factory.families import run_frontend  # noqa: PLC0415

    if not ctx.is_main:
        barrier(ctx)
    data = prepare_data(cfg, run_frontend(cfg))
    if ctx.is_main:
        barrier(ctx)
        data.write_reports(run_dir)
        summary.update(data.summary(), task=cfg.data.task)
        cache = data.cache
        print(f"preprocess: decoded {cache.decoded}, reused {cache.reused}, skipped {len(cache.skipped)}, "
              f"pruned {cache.pruned} (cache {cache.folder})")
    return data


def train_stage(cfg: Config, data: RunData, run_dir: Path, ctx: DistContext, summary: dict[str, Any]
                ) -> Optional[list[str]]:
    """Train; on rank 0 the results join the summary. Returns the checkpoint to submit with (None: none)."""
    from training.train_stage import train  # noqa: PLC0415

    result = train(cfg, data, run_dir, ctx)
    if not ctx.is_main:
        return None
    best = result.best
    summary.update(val_score=best["val_score"], best_epoch=best["epoch"],
                   soundscape_val_score=best.get("soundscape_val_score"), n_train=result.n_train,
                   n_val=result.n_val, n_test=result.n_test, n_soundscape_val=result.n_soundscape_val,
                   classes_without_training_examples=len(result.untrained_classes),
                   untrained_classes=result.untrained_classes, epochs=len(result.history),
                   model=result.model_name, checkpoint=result.checkpoint, duration_outliers=result.duration_outliers,
                   **{f"{split}_metrics": m for split, m in result.evaluation.items()})
    if result.compile_seconds is not None:  # torch.compile's first step, apart from the steady speed
        summary["compile_seconds"] = round(result.compile_seconds, 1)
    data.write_reports(run_dir)  # duration outliers join the skipped files
    return [result.checkpoint] if result.checkpoint else None


def submit_stage(cfg: Config, data: Optional[RunData], checkpoints: Optional[list[str]], run_dir: Path,
                 summary: dict[str, Any], out_csv: Optional[Path] = None) -> int:
    """The submission for the source's test soundscapes (a dry run when there are none), written and scored."""
    from dataloader.sources import load_source  # noqa: PLC0415
    from inference.competition import submit  # noqa: PLC0415

    if not checkpoints:
        log.error("no checkpoint to predict with ([callbacks] model_checkpoint = false?)")
        return 1
    source = data.source if data else load_source(cfg.data, cfg.paths)
    if source.test_dir is None:
        log.error("[data] source = %s has no test soundscapes to write a submission for", source.name)
        return 1
    device = training_device(cfg.trainer.device)  # a GPU that trained predicts too, in its own batch size
    t = cfg.trainer
    batch = 2 * ((t.batch_size_cuda or t.batch_size) if device == "cuda" else t.batch_size)
    out_csv = out_csv or Path(cfg.paths.submissions_dir) / f"{run_dir.name}.csv"
    summary.update(submit(checkpoints, source, out_csv, run_dir / "submission.csv", device, batch))
    return 0


def run(cfg: Config, args: argparse.Namespace, ctx: DistContext, t0: float, runs: Optional[list[Path]] = None,
        folds: int = 1) -> int:
    """The stages of one run (every rank under torchrun; rank 0 alone writes the run folder, appended to ``runs``;
    ``folds``: the cross-validation runs a benchmark projects)."""
    run_dir = start_run(cfg, args, ctx)
    if runs is not None:
        runs.append(run_dir)
    summary: dict[str, Any] = {"run_id": run_dir.name, "run_dir": str(run_dir), "stage": args.stage,
                               "testing": cfg.testing.testing}
    data = preprocess_stage(cfg, ctx, run_dir, summary) if args.stage != "predict" else None
    if args.stage == "benchmark":
        return benchmark_stage(cfg, data, run_dir, ctx, summary, args.benchmark_steps, folds, t0)
    checkpoints = args.checkpoint
    if args.stage in ("train", "all"):
        checkpoints = train_stage(cfg, data, run_dir, ctx, summary)
    if not ctx.is_main:
        return 0
    if args.stage == "all" and data is not None and not data.submits:
        log.info("[data] source = %s: no soundscapes to submit; the held-out splits were scored above",
                 data.source.name)
    elif args.stage in ("predict", "all"):
        code = submit_stage(cfg, data, checkpoints, run_dir, summary)
        if code:
            return code
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_summary(run_dir, summary)
    print_summary(summary)
    return 0


def benchmark_stage(cfg: Config, data: RunData, run_dir: Path, ctx: DistContext, summary: dict[str, Any],
                    steps: int, folds: int = 1, t0: Optional[float] = None) -> int:
    """``--stage benchmark``: time ``steps`` training steps, project the epoch and run times (and, under ``--cv``,
    the ``folds`` runs) and, for a run that submits, the whole pipeline's (from ``t0``, the run's start: what the
    run spent before training counts), print them."""
    t0 = time.perf_counter() if t0 is None else t0
    from training.train_stage import train  # noqa: PLC0415

    before_training = time.perf_counter() - t0
    result = train(cfg, data, run_dir, ctx, benchmark_steps=steps)
    bench = result.benchmark
    if data.submits and ctx.is_main:  # the prediction timed for real, with the benchmark's (untrained) model
        from training.preflight import project_pipeline  # noqa: PLC0415

        t1 = time.perf_counter()
        submit_stage(cfg, data, [result.checkpoint], run_dir, {}, out_csv=run_dir / "benchmark_submission.csv")
        bench.update(project_pipeline(bench, before_training, time.perf_counter() - t1))
    if folds > 1:
        bench.update(folds=folds, minutes_for_cv=round(bench["minutes_for_run"] * folds, 2))
    if ctx.is_main:
        print(json.dumps({"run_id": run_dir.name, "model": result.model_name, **bench}), flush=True)
        write_summary(run_dir, {**summary, "benchmark": bench})
    return 0


def reset_processed(cfg: Config) -> int:
    """``--reset``: remove this config's cache folder (mels or waveforms, statistics, split files); runs stay."""
    from dataloader.preprocess import remove_cache  # noqa: PLC0415
    from factory.families import run_frontend  # noqa: PLC0415

    folder = remove_cache(cfg.paths.cache_dir, run_frontend(cfg))
    print(f"removed {folder}" if folder else f"nothing to remove in {cfg.paths.cache_dir} for these settings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
