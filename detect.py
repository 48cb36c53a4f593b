"""Field recordings in, detections out: what a trained model heard in a folder tree of recordings, and where.

    python detect.py --checkpoint runs/<id>/checkpoints/best.pt --audio-dir recordings/ --out-dir detections/
                     [--hop-s 1] [--min-score 0.1] [--thresholds thresholds.csv] [--threshold 0.5] [--review 12]

Every recording under ``--audio-dir`` (any depth; OGG, WAV, FLAC, MP3; any rate, channel count and length) is
decoded once and its mel computed once, block by block for long files; windows of the model's length every
``--hop-s`` seconds (default: the window length, end to end; the last partial window padded) go through the
models (``.pt`` checkpoints or ``.onnx``/``.xml`` exports, averaged), windows of consecutive files batched together.
Written to ``--out-dir``:

- ``scores.csv``: ``file, start_s, end_s, class, score`` for every window x class scoring at least ``--min-score``
  (an events model: every event bin);
- ``detections.csv``: ``file, class, start_s, end_s, max_score, mean_score``, consecutive windows of a class at or
  above its threshold merged; thresholds from ``--thresholds`` (a ``class,threshold`` CSV; by default the
  ``thresholds.csv`` a training run writes beside its checkpoints, chosen on its validation split for 0.9
  precision), ``--threshold`` for the classes it does not list;
- ``raven/<file>.Table.1.selections.txt`` per recording (tab-separated Raven Pro selection tables) and
  ``raven_selections.csv`` with all of them;
- ``file_summary.csv``: duration, windows and detections per recording, the classes heard with counts and max
  score; ``unreadable.csv``: the recordings that could not be read and why (the others go on);
- with ``--review N``: ``review/<class>.png``, the class's top N detections as mel spectrograms on one page.

The tables are written as recordings finish: a rerun into the same ``--out-dir`` with the same settings skips the
recordings already done (a stopped run loses only what was in flight); other settings are refused.

Larger than one machine: ``--ray auto`` (or ``--ray host:port``) runs the same pipeline on a Ray cluster
(:mod:`inference.ray_engine`: decoding and front end on CPU tasks, the models in a pool of actors, one per
``--ray-gpus-per-actor`` GPU share when set), the same rows as here; ``--shard i/N`` takes one deterministic N-th
of the recordings (a SLURM job array runs N of them) and ``python -m inference.merge_detections`` joins the shards'
folders.

For a Kaggle submission use ``predict.py``. Imports nothing from training.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inference.cli import add_model_arguments, decode_threads, setup_logging  # noqa: E402
from inference.detection_tables import start_tables, write_tables  # noqa: E402
from dataloader.audio import audio_tree  # noqa: E402
from inference.detections import OutputLayout, check_one_front_end, file_scores, load_thresholds  # noqa: E402
from inference.file_pipeline import stream_files  # noqa: E402
from dataloader.scale_out import add_scale_arguments, scale_files  # noqa: E402
from inference.predict import SoundscapePredictor  # noqa: E402
from utils.checkpoints import CheckpointError  # noqa: E402

log = logging.getLogger("detect")
RUN_THRESHOLDS = "thresholds.csv"  # what a training run writes in its folder
# windows per model call: memory stays flat whatever the recording's length (efficientnet_b0, 2 cores: a 1-hour
# recording peaked at 953 MB with a checkpoint and 399 MB with its ONNX export at 8, against 1,296 and 952 MB at
# 32), and 8 ran as fast as 32 (torch) or faster (ONNX Runtime: 103 against 81 windows/s)
DETECT_BATCH = 8


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(p, ".pt checkpoints and/or exported .onnx/.xml models", "a folder tree of recordings",
                        DETECT_BATCH, "only the first N recordings")
    p.add_argument("--out-dir", default="detections")
    p.add_argument("--hop-s", type=float, help="seconds between window starts (default: the window length)")
    p.add_argument("--min-score", type=float, default=0.1, help="the lowest score scores.csv keeps")
    p.add_argument("--thresholds", help="class,threshold CSV (default: the training run's thresholds.csv, if any)")
    p.add_argument("--threshold", type=float, default=0.5, help="the threshold of classes --thresholds does not list")
    p.add_argument("--review", type=int, default=0, metavar="N", help="review sheets: each class's top N detections")
    add_scale_arguments(p, "python -m inference.merge_detections")
    return p.parse_args(argv)


def run_thresholds(checkpoint: str) -> Optional[Path]:
    """The ``thresholds.csv`` of the training run a checkpoint comes from (``runs/<id>/checkpoints/x.pt``)."""
    path = Path(checkpoint).resolve().parent.parent / RUN_THRESHOLDS
    return path if path.is_file() else None


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory so far, in MB: Linux's ``VmHWM`` (the peak of this program's own address
    space; ``getrusage``'s maximum also counts a parent's memory at ``fork``), else ``getrusage``; None on Windows."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    try:
        import resource  # noqa: PLC0415
    except ImportError:
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return round(kb / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def run_settings(args: argparse.Namespace, thresholds) -> dict:
    """What the tables depend on (``run.json``): a rerun with other settings does not append to them."""
    return {"checkpoints": [str(Path(c).resolve()) for c in args.checkpoint], "hop_s": args.hop_s,
            "min_score": args.min_score, "thresholds": [round(float(t), 6) for t in thresholds],
            "audio_dir": str(Path(args.audio_dir).resolve()), "shard": args.shard or "", "limit": args.limit}


def engine_spec(args: argparse.Namespace, predictor: SoundscapePredictor):
    """The ensemble the cluster's workers build: this command's models and backend, one thread per task."""
    from inference.ray_engine import EnsembleSpec  # noqa: PLC0415

    return EnsembleSpec(tuple(str(c) for c in args.checkpoint), batch_size=args.batch_size, backend=args.backend,
                        threads=1, precision=args.precision, openvino_mode=args.openvino_mode,
                        row_s=predictor.window_s)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    if args.hop_s is not None and args.hop_s <= 0:
        log.error("--hop-s %s: must be positive", args.hop_s)
        return 2
    try:
        files = scale_files(args, audio_tree(args.audio_dir)[:args.limit])
        predictor = SoundscapePredictor(args.checkpoint, batch_size=args.batch_size, backend=args.backend,
                                        threads=args.threads, precision=args.precision,
                                        openvino_mode=args.openvino_mode)
        layout = OutputLayout.of(predictor.labels)
        thresholds_path = args.thresholds or run_thresholds(args.checkpoint[0])
        if thresholds_path and not args.thresholds:
            log.info("thresholds from the training run: %s", thresholds_path)
        thresholds = load_thresholds(thresholds_path, layout.classes, args.threshold)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if not files:
        log.error("no recordings (.ogg, .wav, .flac, .mp3) under %s", args.audio_dir)
        return 1
    frontend = predictor.frontend
    settings = frontend.settings_dict()
    root = Path(args.audio_dir)
    try:
        check_one_front_end(predictor)
        done = start_tables(args.out_dir, run_settings(args, thresholds))
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    todo = [f for f in files if str(f.relative_to(root)) not in done]
    if done:
        log.info("%s: %d recordings already done, %d to go", args.out_dir, len(files) - len(todo), len(todo))
    t0 = time.perf_counter()
    if args.ray:
        from inference import ray_engine  # noqa: PLC0415 - Ray only when a cluster is asked for

        ray_engine.connect(args.ray)
        try:
            rows = ray_engine.stream_files(engine_spec(args, predictor), todo, args.hop_s, actors=args.ray_actors,
                                           gpus_per_actor=args.ray_gpus_per_actor, progress="detect")
        except ValueError as exc:
            log.error("%s", exc)
            return 2
    else:
        rows = stream_files(predictor, todo, args.hop_s, decode_threads(args), progress="detect")
    scores = file_scores(rows, layout, predictor.window_s, root)
    run = write_tables(scores, layout.classes, thresholds, args.min_score, args.out_dir,
                       float(settings.get("f_min", 0.0)), float(settings.get("f_max", frontend.sample_rate / 2)),
                       resume=bool(done))
    seconds = time.perf_counter() - t0
    summary = {"recordings": run.files, "skipped_done": len(files) - len(todo), "unreadable": run.unreadable,
               "audio_hours": round(run.audio_s / 3600, 3),
               "windows": run.windows, "windows_per_s": round(run.windows / max(seconds, 1e-9), 1),
               "realtime_factor": round(run.audio_s / max(seconds, 1e-9), 1), "detections": run.detections,
               "score_rows": run.score_rows, "seconds": round(seconds, 1), "peak_rss_mb": peak_rss_mb(),
               "out_dir": str(run.out_dir)}
    if args.review:
        import pandas as pd  # noqa: PLC0415

        from inference.review_sheet import review_sheets  # noqa: PLC0415

        pages = review_sheets(pd.read_csv(run.out_dir / "detections.csv", dtype={"file": str, "class": str}),
                              Path(args.audio_dir), frontend, run.out_dir / "review", args.review)
        summary["review_pages"] = len(pages)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
