"""Teacher -> student on real clips, fold by fold: a foundation-model head teaches a fast CNN, measured as the mean ±
std over the folds of a csv source's cross-validation, with the speeds of teacher and student in the same run.

    python benchmarks/self_training_cv.py --data-dir ../shared/data/esc50_fold4 [--folds 0 1 2 3]
        [--student-config configs/distilled_student.ini] [--views-per-clip 10] [--semi | --semi-only] [--rounds 3]
        [--student-set KEY=VALUE ...]

Per fold (``[data] fold``; the csv source's ``labels.csv`` with ``path,label,group``):

1. ``teacher``: a linear head on BirdNET V2.4 embeddings trained on the fold's training clips
   (``--teacher-config`` with ``model.family = embedding``, as the README's small-dataset table measured it);
2. ``student``: the student config (a small CNN on mels, random weights) trained on the labels plus mixed views of
   the same training clips labelled by that teacher (:mod:`dataloader.mixed_views`, ``self_training`` with
   ``folds = 1``, one round): teacher and student hear the same sounds;
3. speed: windows per second of teacher and student end to end from the fold's held-out audio (decode, front end,
   model), same run, same files;
4. with ``--semi``: the labels of half of each training split are hidden (stratified by class, seeded) and their
   clips become the unlabeled pool: ``supervised`` (the student config on the labelled half alone), ``distilled``
   (the head trained on the labelled half teaches the student on the pool's clips), and ``round_1 .. round_N``
   (self-training from that teacher, out-of-fold students).

Prints one JSON line per fold and variant (held-out accuracy and macro F1 of the run's validation fold, which is
its test fold: ``model_checkpoint_type = epoch``, nothing selected on it), then one summary line per variant (mean ±
std over the folds). Real audio, for measurements only (never a test's or a default's data).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import train_classifier  # noqa: E402

HEAD = ["model.family=embedding", "model.type=birdnet", "model.head=linear"]  # README's (d), on the same config


def newest_run(runs_dir: Path, before: set[Path]) -> Path:
    """The run folder a call just created."""
    new = sorted(set(p for p in runs_dir.iterdir() if p.is_dir()) - before)
    if not new:
        raise RuntimeError(f"no new run folder in {runs_dir}")
    return new[-1]


def train(config: str, overrides: list[str], runs_dir: Path, extra: tuple[str, ...] = ()) -> Path:
    """One run of ``train_classifier.py`` in-process; returns its folder (the loop folder for ``--rounds``)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    before = set(runs_dir.iterdir())
    with contextlib.redirect_stdout(sys.stderr):  # the runs' summaries: stdout holds the JSON lines alone
        code = train_classifier.main(["--config", config, *[f"--set={o}" for o in overrides], *extra])
    if code:
        raise RuntimeError(f"train_classifier exited {code} for {overrides}")
    return newest_run(runs_dir, before)


def held_out_scores(run_dir: Path) -> dict[str, float]:
    """Accuracy and macro F1 of a run's validation (= held-out) fold."""
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = summary.get("val_metrics") or {}
    return {"accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1"), "run": run_dir.name}


def windows_per_s(checkpoint: str, files: list[Path]) -> float:
    """Held-out clips per second, end to end (decode, front end, model), after one warm-up file."""
    from inference.predict import SoundscapePredictor, predict_folder  # noqa: PLC0415

    predictor = SoundscapePredictor([checkpoint], row_s=5.0)
    predictor.predict_file(files[0])
    t0 = time.perf_counter()
    frame = predict_folder(predictor, files[0].parent, list(predictor.labels), files=files)
    return len(frame) / (time.perf_counter() - t0)


def hide_half(labels_csv: Path, train_paths: set[str], val_paths: set[str], seed: int, out: Path
              ) -> tuple[Path, Path]:
    """A labels table without half of the training clips (stratified by class, seeded), with a ``fold`` column that
    keeps the fold's held-out clips as fold 0 (the same test clips as the full runs), and a pool folder of links to
    the hidden clips; returns (table, pool folder)."""
    table = pd.read_csv(labels_csv)
    base = labels_csv.parent
    resolved = [str((base / p).resolve()) for p in table["path"]]
    table = table[[r in train_paths or r in val_paths for r in resolved]]
    table["fold"] = [0 if str((base / p).resolve()) in val_paths else 1 for p in table["path"]]
    train = table[table["fold"] == 1]
    rng = np.random.default_rng(seed)
    hidden = []
    for _, rows in train.groupby("label"):
        idx = rng.permutation(rows.index.to_numpy())
        hidden += list(idx[: len(idx) // 2])
    pool = out / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    for p in table.loc[hidden, "path"]:
        link = pool / Path(p).name
        if not link.exists():
            link.symlink_to((base / p).resolve())
    kept = table.drop(index=hidden).copy()
    kept["path"] = [str((base / p).resolve()) for p in kept["path"]]
    path = out / "labels.csv"
    kept.to_csv(path, index=False)
    return path, pool


def fold_runs(args: argparse.Namespace, fold: int, work: Path) -> list[dict[str, Any]]:
    """Every variant of one fold (see the module docstring)."""
    from dataloader.mixed_views import write_views  # noqa: PLC0415

    runs = work / "runs"
    common = [f"data.fold={fold}", "data.source=csv", f"paths.data_dir={args.data_dir}",
              f"data.labels_csv={Path(args.data_dir) / 'labels.csv'}", f"paths.runs_dir={runs}",
              f"paths.cache_dir={work / 'cache'}", "callbacks.model_checkpoint_type=epoch",
              f"trainer.seed={args.seed}", f"data.split_seed={args.seed}"]  # a student's trainer.seed: same split
    out: list[dict[str, Any]] = []
    teacher_dir = train(args.teacher_config, common + HEAD, runs)
    teacher = json.loads((teacher_dir / "summary.json").read_text())["checkpoint"]
    out.append({"fold": fold, "variant": "teacher", **held_out_scores(teacher_dir)})
    train_paths = list(pd.read_csv(teacher_dir / "split" / "train.csv")["path"])
    held_out = [Path(p) for p in pd.read_csv(teacher_dir / "split" / "val.csv")["path"]]
    if args.semi_only:
        return out + semi_supervised(args, fold, work, common, {str(Path(p).resolve()) for p in train_paths},
                                     {str(p.resolve()) for p in held_out})
    views = work / f"views_fold{fold}"
    t0 = time.perf_counter()
    write_views(train_paths, views, args.views_per_clip, sample_rate=48000, seed=args.seed + fold)  # BirdNET's rate
    views_s = time.perf_counter() - t0
    loop = train(args.student_config, common + [f"self_training.teacher={teacher}", f"self_training.pool_dir={views}",
                                                "self_training.folds=1", *args.student_set], runs, ("--rounds", "1"))
    state = json.loads((loop / "state.json").read_text())
    student_dir = Path(state["rounds"][1]["students"]["0"])
    student = json.loads((student_dir / "summary.json").read_text())["checkpoint"]
    speed_t, speed_s = windows_per_s(teacher, held_out), windows_per_s(student, held_out)
    out.append({"fold": fold, "variant": "student", **held_out_scores(student_dir), "views": len(list(
        views.glob("*.wav"))), "views_seconds": round(views_s, 1), "teacher_windows_per_s": round(speed_t, 1),
        "student_windows_per_s": round(speed_s, 1), "speedup": round(speed_s / speed_t, 2)})
    if args.semi:
        out += semi_supervised(args, fold, work, common, {str(Path(p).resolve()) for p in train_paths},
                               {str(p.resolve()) for p in held_out})
    return out


def semi_supervised(args: argparse.Namespace, fold: int, work: Path, common: list[str], train_paths: set[str],
                    val_paths: set[str]) -> list[dict[str, Any]]:
    """Half of the training labels hidden: supervised-only, teacher-distilled, and self-training rounds."""
    runs = work / "runs"
    table, pool = hide_half(Path(args.data_dir) / "labels.csv", train_paths, val_paths, args.seed + fold,
                            work / f"semi{fold}")
    half = [o for o in common if not o.startswith(("data.labels_csv", "data.fold"))] + [
        f"data.labels_csv={table}", "data.fold=0"]
    half += args.student_set
    out = [{"fold": fold, "variant": "supervised_half", **held_out_scores(train(args.student_config, half, runs))}]
    head_dir = train(args.teacher_config, half + HEAD, runs)
    head = json.loads((head_dir / "summary.json").read_text())["checkpoint"]
    out.append({"fold": fold, "variant": "teacher_half", **held_out_scores(head_dir)})
    loop = train(args.student_config, half + [f"self_training.teacher={head}", f"self_training.pool_dir={pool}",
                                              f"self_training.power={args.power}", "self_training.folds=2"], runs,
                 ("--rounds", str(args.rounds)))
    state = json.loads((loop / "state.json").read_text())
    for entry in state["rounds"][1:]:
        scores = [held_out_scores(Path(p)) for p in entry["students"].values()]
        out.append({"fold": fold, "variant": f"round_{entry['round']}",
                    "accuracy": float(np.mean([s["accuracy"] for s in scores])),
                    "macro_f1": float(np.mean([s["macro_f1"] for s in scores])), "run": loop.name})
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="a csv source: labels.csv with path,label[,group]")
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--student-config", default=str(ROOT / "configs" / "distilled_student.ini"))
    p.add_argument("--teacher-config", default=str(ROOT / "configs" / "small_dataset.ini"),
                   help="the head's config (with model.family = embedding, model.type = birdnet on top)")
    p.add_argument("--views-per-clip", type=int, default=10)
    p.add_argument("--student-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override of the student config (repeatable), e.g. self_training.power=0.33")
    p.add_argument("--semi", action="store_true", help="also the half-labelled experiments")
    p.add_argument("--semi-only", action="store_true", help="the teacher and the half-labelled experiments alone")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--power", default="1.0")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--work", default="runs/self_training_cv")
    args = p.parse_args(argv)
    rows = []
    for fold in args.folds:
        for row in fold_runs(args, fold, Path(args.work)):
            print(json.dumps(row), flush=True)
            rows.append(row)
    table = pd.DataFrame(rows)
    for variant, part in table.groupby("variant", sort=False):
        summary = {"variant": variant, "folds": len(part)}
        for key in ("accuracy", "macro_f1", "speedup", "teacher_windows_per_s", "student_windows_per_s"):
            if key in part and part[key].notna().any():
                summary[key] = f"{part[key].mean():.3f} ± {part[key].std(ddof=1) if len(part) > 1 else 0.0:.3f}"
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
