"""Cross-validation as a command: every fold trained in turn, one table of per-fold and mean ± std scores.

``python train_classifier.py --cv`` trains ``[data] n_folds`` folds (or the folds of a csv source's ``fold``
column), each in its own run folder, and writes ``<runs_dir>/cv-<time>/cv_folds.csv`` (one row per fold: its run,
its validation and test metrics), ``cv_summary.json`` (mean, std and n of each metric over all folds: a figure
is the mean over folds, never the best one) and ``cv_curves.png`` (every fold's training and validation loss and
validation score per epoch), and prints the table. ``python -m training.cross_validation runs/cv-<time>`` redraws the
picture of a finished cross-validation.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from utils.config_schema import Config

SCORE_KEYS = ("val_score", "soundscape_val_score", "soundscape_score")  # BirdCLEF's competition metric and friends


def fold_values(cfg: Config) -> list[int]:
    """The folds to run: a csv source's own ``fold`` column when its table has one, else ``range(n_folds)``."""
    if cfg.data.source == "csv" and cfg.data.split == "kfold":
        from dataloader.sources import load_source  # noqa: PLC0415

        table = load_source(cfg.data, cfg.paths).recordings
        if "fold" in table:
            return sorted(int(f) for f in set(table["fold"]) if f >= 0)
    return list(range(cfg.data.n_folds))


def fold_config(cfg: Config, fold: int) -> Config:
    """``cfg`` with ``[data] fold`` set."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=fold))


def fold_row(fold: int, run_dir: Path) -> dict[str, Any]:
    """One fold's scores from its ``summary.json``: the BirdCLEF scores and every validation / test metric."""
    summary = json.loads((run_dir / "summary.json").read_text())
    row: dict[str, Any] = {"fold": fold, "run": run_dir.name}
    row.update({k: summary[k] for k in SCORE_KEYS if summary.get(k) is not None})
    for split in ("val", "test"):
        for key, value in (summary.get(f"{split}_metrics") or {}).items():
            if isinstance(value, (int, float)) and key != "examples":
                row[f"{split}_{key}"] = value
    return row


def write_cv(rows: list[dict[str, Any]], runs_dir: str | Path) -> tuple[Path, dict[str, dict[str, float]]]:
    """``cv_folds.csv`` and ``cv_summary.json`` in a new ``cv-<time>`` folder; returns it and the summary."""
    table = pd.DataFrame(rows)
    folder = Path(runs_dir) / f"cv-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "cv_folds.csv", index=False, float_format="%.6f")
    summary = {column: {"mean": round(float(np.mean(table[column])), 6),
                        "std": round(float(np.std(table[column], ddof=1)) if len(table) > 1 else 0.0, 6),
                        "n": int(table[column].notna().sum())}
               for column in table.columns if column not in ("fold", "run") and table[column].notna().all()}
    (folder / "cv_summary.json").write_text(json.dumps({"folds": table["fold"].tolist(), "scores": summary},
                                                       indent=1))
    return folder, summary


def plot_cv_curves(folder: str | Path) -> Path:
    """``cv_curves.png`` in the cv folder ``folder``: each fold's training (dashed) and validation (solid) loss on a
    log scale, where a spike of orders of magnitude shows, and its validation score, read from the ``metrics.csv``
    of the fold runs beside ``folder``."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    folder = Path(folder)
    table = pd.read_csv(folder / "cv_folds.csv")
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (fold, run) in enumerate(zip(table["fold"], table["run"])):
        metrics = pd.read_csv(folder.parent / run / "metrics.csv")
        colour = f"C{i}"
        ax_loss.plot(metrics["epoch"], metrics["val_loss"], color=colour, label=f"fold {fold} validation")
        ax_loss.plot(metrics["epoch"], metrics["train_loss"], color=colour, linestyle="--", alpha=0.6)
        ax_score.plot(metrics["epoch"], metrics["val_score"], color=colour, label=f"fold {fold}")
    ax_loss.set_yscale("log"), ax_loss.set_xlabel("epoch"), ax_loss.legend(fontsize=8)
    ax_loss.set_title("loss per fold (solid: validation, dashed: training)")
    ax_score.set_xlabel("epoch"), ax_score.legend(fontsize=8)
    ax_score.set_title("validation score (macro ROC-AUC) per fold")
    fig.tight_layout()
    path = folder / "cv_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_folds(cfg: Config, train_one: Callable[[Config], Path], is_main: bool = True) -> Optional[Path]:
    """Train every fold of :func:`fold_values` with ``train_one`` (one configuration -> its run folder), then write
    and print the table (rank 0 alone, ``is_main``); returns the cv folder."""
    rows = []
    for fold in fold_values(cfg):
        run_dir = train_one(fold_config(cfg, fold))
        if is_main:
            rows.append(fold_row(fold, run_dir))
    if not is_main:
        return None
    folder, summary = write_cv(rows, cfg.paths.runs_dir)
    plot_cv_curves(folder)
    print(f"cross-validation over folds {[r['fold'] for r in rows]} -> {folder}\n{format_summary(summary)}")
    return folder


def format_summary(summary: dict[str, dict[str, float]]) -> str:
    """``metric  mean ± std (n folds)`` lines."""
    return "\n".join(f"  {name:<28} {s['mean']:.4f} ± {s['std']:.4f}  ({s['n']} folds)" for name, s in summary.items())


if __name__ == "__main__":
    import sys

    for cv_folder in sys.argv[1:] or sys.exit("usage: python -m training.cross_validation runs/cv-<time> [...]"):
        print(plot_cv_curves(cv_folder))
