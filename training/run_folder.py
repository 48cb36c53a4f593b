"""Run folders: ``runs/<run id>/`` with the resolved config, a log file and ``summary.json``; seeding."""
from __future__ import annotations

import json
import logging
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from training.config import ConfigError

log = logging.getLogger(__name__)


def make_run_id(model_name: str, testing: bool) -> str:
    """``YYYYmmdd-HHMMSS-<model>[-testing]`` (create_run_dir adds a suffix if that folder exists); a model named by
    a path or a hub id (``facebook/wav2vec2-base``) contributes its last part."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name.rstrip("/\\").replace("\\", "/").split("/")[-1]) or "model"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{name}{'-testing' if testing else ''}"


def create_run_dir(runs_dir: str | Path, run_id: str) -> Path:
    """Create ``runs_dir/run_id`` (adding ``-2``, ``-3`` ... if it exists). The folder is created exclusively, so
    runs started in the same second never share one. Temporary checkpoint files of killed runs are removed."""
    from utils.atomic_files import remove_stale_temporaries  # noqa: PLC0415

    base = Path(runs_dir) / run_id
    base.parent.mkdir(parents=True, exist_ok=True)
    for folder in base.parent.glob("*/checkpoints"):  # checkpoint writes of killed runs (their pid is gone)
        remove_stale_temporaries(folder)
    n = 1
    while True:
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def setup_logging(log_file: Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and (when given) to ``log_file``."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_birdclef", False):
            root.removeHandler(h)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(fmt)
        h._birdclef = True  # type: ignore[attr-defined]
        root.addHandler(h)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (DataLoader workers derive their seeds from torch's)."""
    import torch  # noqa: PLC0415

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """``summary.json`` in the run folder."""
    path = run_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path


def checkpoint_mismatch(payload: dict[str, Any], expect: Optional[dict[str, Any]]) -> Optional[str]:
    """Why a checkpoint cannot continue this run (another model, other labels, another front end), or None."""
    for key, what in (("model_name", "another model"), ("labels", "other labels"), ("data_process", "another front end")):
        if expect and key in expect and payload.get(key) != expect[key]:
            mine, theirs = expect[key], payload.get(key)
            detail = (f"{len(theirs or [])} classes, this run {len(mine)}" if key == "labels" else
                      f"{theirs}, this run {mine}" if key == "model_name" else "other [data_process] settings")
            return f"{what} ({detail})"
    return None


def resolve_resume(resume: str, runs_dir: Path, run_dir: Path, expect: Optional[dict[str, Any]] = None
                   ) -> Optional[Path]:
    """``[trainer] resume``: a checkpoint path, ``auto`` (the newest ``last.pt`` under ``runs_dir``, other than this
    run's, that loads and matches ``expect``: model name, labels, front end; the ones passed over are logged with
    the reason), or empty (fresh start). A given path that is missing, damaged, refused or foreign stops the run
    (:class:`utils.checkpoints.CheckpointError`, one line naming the file)."""
    from utils.checkpoints import CheckpointError, load_checkpoint  # noqa: PLC0415

    if not resume:
        return None
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise ConfigError(f"[trainer] resume = {resume}: no such checkpoint")
        problem = checkpoint_mismatch(load_checkpoint(path), expect)
        if problem:
            raise CheckpointError(f"{path}: cannot continue this run: {problem}")
        return path
    found = sorted((p for p in runs_dir.glob("*/checkpoints/last.pt") if p.parent.parent != run_dir),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    passed: list[str] = []
    for path in found:
        try:
            problem = checkpoint_mismatch(load_checkpoint(path), expect)
        except CheckpointError as exc:
            problem = str(exc).split(": ", 1)[-1]
        if problem is None:
            log.info("[trainer] resume = auto: %s%s", path,
                     f" (passed over: {'; '.join(passed)})" if passed else "")
            return path
        passed.append(f"{path}: {problem}")
    log.warning("[trainer] resume = auto: no usable last.pt under %s, starting fresh%s", runs_dir,
                f" (passed over: {'; '.join(passed)})" if passed else "")
    return None


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


def print_summary(s: dict[str, Any]) -> None:
    """The end-of-run summary on stdout: what ran, the metrics, and where the outputs are."""
    lines = ["", "=" * 70, f"run {s['run_id']} ({s['stage']}) finished in {s['wall_seconds']:.0f} s"]
    unknown = s.get("unknown_secondary_labels") or {}
    for key, value in (*((k, s.get(k)) for k in (
            "data_source", "task", "recordings", "skipped", "rating_dropped", "classes",
            "classes_without_training_examples", "n_train", "n_val", "n_test", "n_soundscape_val", "epochs",
            "val_score", "soundscape_val_score", "val_metrics", "test_metrics", "soundscape_score")),
            ("unknown secondary", f"{len(unknown)} labels, {sum(unknown.values())} times" if unknown else None),
            *((k, s.get(k)) for k in ("run_dir", "checkpoint", "submission"))):
        if value is not None:
            lines.append(f"  {key:<17} {value}")
    lines.append("=" * 70)
    print("\n".join(lines))
