"""README command 1's pipeline as a newcomer runs it, timed and scored, printed as one JSON line per step.

    python benchmarks/first_run.py [--repo DIR] [--edition 2024] [--work DIR] [--set KEY=VALUE ...] [--no-projection]

On a fresh folder (no demo, no cache, as a fresh clone has), in the repository ``--repo`` (default: this one; give
a checkout of an older commit to measure its defaults on the same machine):

1. ``generation``: the demo's generation alone (``dataloader.demo.generate_demo`` on every core), seconds;
2. ``projection``: ``python train_classifier.py --stage benchmark`` on a fresh demo and cache: its projection of the
   whole run (``seconds_for_pipeline``: start-up, generation, cache, set-up, the epochs, the run's end, prediction); skipped with
   ``--no-projection`` (or when the repository's benchmark has no such projection);
3. ``first_run``: ``python train_classifier.py`` on a fresh demo and cache, as README command 1 runs it: its wall time
   (the process's, imports included, and the run's own ``wall_seconds``), epochs, ``val_score``,
   ``soundscape_score`` (2024/2025) or ``soundscape_val_score`` (2026), and the projection's error.

``--set`` passes overrides to both runs (e.g. the full-size settings). The CPU's vector extensions are in every row.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu_train_options import cpu_flags  # noqa: E402


def emit(row: dict) -> None:
    print(json.dumps({**row, "cpu": cpu_flags(), "cores": os.cpu_count()}), flush=True)


def fresh(work: Path, name: str) -> list[str]:
    """Overrides that give a run its own empty demo, cache, runs and submissions folders under ``work/name``."""
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return [f"paths.{key}={folder / key}" for key in ("demo_dir", "cache_dir", "runs_dir", "submissions_dir")] + [
        f"paths.data_dir={folder / 'no-kaggle-data'}"]


def train(repo: Path, overrides: list[str], extra: list[str] = ()) -> tuple[float, str]:
    """``python train_classifier.py`` in ``repo``: (process wall seconds, stdout)."""
    cmd = [sys.executable, "train_classifier.py", *[f"--set={o}" for o in overrides], *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"train_classifier.py failed ({done.returncode}): {done.stderr[-3000:]}")
    return time.perf_counter() - t0, done.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", default=str(ROOT), help="the checkout whose train_classifier.py runs")
    p.add_argument("--edition", default="2024", choices=("2024", "2025", "2026"))
    p.add_argument("--work", default="runs/first_run_bench", help="scratch folder (emptied per step)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-projection", action="store_true")
    args = p.parse_args()
    repo, work = Path(args.repo).resolve(), Path(args.work).resolve()
    common = [f"data.demo_edition={args.edition}", *args.overrides]
    label = {"repo": str(repo), "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo,
                                                         capture_output=True, text=True).stdout.strip(),
             "edition": args.edition, "overrides": args.overrides}

    folder = work / "generation"
    shutil.rmtree(folder, ignore_errors=True)
    code = (f"import time; from dataloader.demo import generate_demo; t = time.perf_counter(); "
            f"generate_demo({str(folder)!r}, edition={args.edition!r}); print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    emit({"step": "generation", **label, "seconds": round(float(out.stdout.strip().splitlines()[-1]), 1)})

    projection = None
    if not args.no_projection:
        _, stdout = train(repo, [*common, *fresh(work, "benchmark")], ["--stage", "benchmark"])
        bench = json.loads(stdout.strip().splitlines()[-1])
        projection = bench.get("seconds_for_pipeline")
        emit({"step": "projection", **label, **{k: bench.get(k) for k in (
            "epochs", "seconds_per_epoch", "seconds_before_training", "seconds_prediction", "seconds_for_pipeline")}})

    wall, _ = train(repo, [*common, *fresh(work, "first_run")])
    run_dir = next(p for p in (work / "first_run" / "runs_dir").iterdir() if p.is_dir())
    summary = json.loads((run_dir / "summary.json").read_text())
    row = {"step": "first_run", **label, "process_wall_s": round(wall, 1), "wall_seconds": summary["wall_seconds"],
           "epochs": summary.get("epochs"), "val_score": summary.get("val_score"),
           "soundscape_score": summary.get("soundscape_score"),
           "soundscape_val_score": summary.get("soundscape_val_score")}
    if projection:
        row["projection_error"] = round(projection / summary["wall_seconds"] - 1, 3)
    emit(row)


if __name__ == "__main__":
    main()
