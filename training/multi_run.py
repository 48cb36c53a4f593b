"""Commands made of several runs: cross-validation (``--cv``: one run per fold) and self-training (``--rounds N``:
a teacher, then students per round). Each run is the entry's ``run`` (passed in: the entry script sits above this
package), in a folder of its own."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

from training.config import Config, ConfigError
from training.distributed import DistContext

# train_classifier.run: (cfg, args, ctx, t0, runs, folds) -> exit code; appends its run folder to ``runs``
RunFn = Callable[..., int]


class RunFailed(RuntimeError):
    """One run of a multi-run command failed; ``code`` is its exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def one_run(run: RunFn, args: argparse.Namespace, ctx: DistContext) -> Callable[[Config], Path]:
    """Training of one configuration in a run folder of its own, returning the folder (every rank takes part
    under torchrun); a failed run raises :class:`RunFailed`."""
    def train_one(run_cfg: Config) -> Path:
        runs: list[Path] = []
        code = run(run_cfg, args, ctx, time.perf_counter(), runs)
        if code:
            raise RunFailed(f"the run {runs[-1] if runs else ''} failed (exit {code})", code)
        return runs[-1]
    return train_one


def cross_validate(cfg: Config, args: argparse.Namespace, ctx: DistContext, t0: float, run: RunFn) -> int:
    """``--cv``: every fold trained (no submission), then the table of per-fold and mean ± std scores; with
    ``--stage benchmark`` one fold is timed and every fold projected."""
    from training.cross_validation import fold_config, fold_values, run_folds  # noqa: PLC0415

    if args.stage == "benchmark":
        folds = fold_values(cfg)
        return run(fold_config(cfg, folds[0]), args, ctx, t0, folds=len(folds))
    args.stage = "train"
    run_folds(cfg, one_run(run, args, ctx), ctx.is_main)
    return 0


def self_train(cfg: Config, args: argparse.Namespace, ctx: DistContext, run: RunFn) -> int:
    """``--rounds N`` / ``--resume-loop``: the teacher and N rounds of students, each a run of its own that trains
    and submits (:mod:`training.self_training`), in one process."""
    from training.self_training import run_loop  # noqa: PLC0415

    if ctx.enabled or args.cv or args.stage not in ("all", "train"):
        raise ConfigError("self-training trains and submits every round in one process (--stage all; no --cv, "
                          "no torchrun)")
    args.stage = "all"
    folder = run_loop(cfg, one_run(run, args, ctx), args.resume_loop or "")
    print(f"self-training -> {folder / 'rounds.csv'}")
    return 0
