"""Offline inference for a Kaggle submission, from a shell or a notebook.

    python predict.py --checkpoint A.pt [B.onnx C.xml ...] --audio-dir DIR --out submission.csv
                      [--backend auto|torch|onnx|openvino] [--sample-submission FILE] [--smooth K]
                      [--time-budget-minutes 110]

Each soundscape is decoded once and its mel computed once with the front end and statistics stored with the
models; 5-s windows (the last partial one padded) go through every model of the ensemble (``.pt``
checkpoints, or ``.onnx``/``.xml`` files from ``python -m inference.export``), probabilities are averaged,
optionally smoothed over ±K neighbouring windows, validated against ``sample_submission.csv`` and written. List
the models best first: the clock guard (``--time-budget-minutes``) drops them from the end when time runs short.
Any audio format training reads (OGG, WAV, FLAC, MP3, extensions in any case). When DIR holds no audio (as
outside Kaggle's scoring), a dry run predicts the first files of the edition's sibling soundscape folder
(``train_soundscapes/`` for 2025/2026, ``unlabeled_soundscapes/`` for 2024). ``--time-budget-minutes auto``
takes the edition's CPU limit (recognised from the competition folder) minus a margin. Imports nothing from
training.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader.embedders import EmbedderError  # noqa: E402
from dataloader.audio import audio_files  # noqa: E402
from dataloader.sources.editions import ROW_S, competition_facts, guard_minutes, scored_file_seconds  # noqa: E402
from inference.cli import (add_model_arguments, add_trick_arguments, decode_threads, setup_logging,  # noqa: E402
                           trick_settings)
from inference.competition import prediction_folder, species_columns  # noqa: E402
from inference.postprocess import describe  # noqa: E402
from inference.predict import BATCH_SIZE, SoundscapePredictor, fill_rows, predict_folder  # noqa: E402
from inference.priors import SiteHourPriors  # noqa: E402
from inference.submission import write_submission  # noqa: E402
from inference.teacher_member import is_teacher  # noqa: E402
from utils.checkpoints import CheckpointError  # noqa: E402

log = logging.getLogger("predict")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(p, ".pt checkpoints and/or exported .onnx/.xml models, and teacher:birdnet (the foundation "
                        "model's own logits for the classes it maps onto)", "folder of soundscapes, "
                        ".ogg/.wav/.flac/.mp3 (Kaggle: test_soundscapes)", BATCH_SIZE, "only the first N files")
    p.add_argument("--out", default="submission.csv")
    p.add_argument("--sample-submission", help="its columns and their order (default: DIR/../sample_submission.csv "
                   "when present, else the models' labels)")
    add_trick_arguments(p)
    p.add_argument("--row-seconds", type=float, help="submission row length (default: the competition's, 5 s, "
                   "whatever the models' input length); models trained on longer inputs see a context window "
                   "centred on each row")
    p.add_argument("--fill-value", type=float, default=0.0, help="probability for the rows of an unreadable file")
    p.add_argument("--time-budget-minutes", default="0",
                   help="clock guard: keep the whole run (model loading included) within this many minutes by "
                   "dropping the last ensemble members when the pace says they would overrun, and filling the "
                   "files left when the time is spent (0 = no guard; auto = the edition's limit minus 10 minutes: "
                   "110 for 2024, 80 for 2025/2026)")
    return p.parse_args(argv)


def budget_from_arg(value: str, competition_dir: Path) -> float:
    """``--time-budget-minutes``: a number of minutes, or ``auto`` (the edition's limit minus the margin)."""
    if value.strip().lower() == "auto":
        minutes, why = guard_minutes(competition_dir)
        log.info("clock guard: %g minutes (%s)", minutes, why)
        return minutes
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"--time-budget-minutes {value!r}: a number of minutes, or auto") from None


def load_priors(setting: str, strength: float, competition_dir: Path, columns: list[str]
                ) -> SiteHourPriors | None:
    """``--priors``: a labelled-soundscape table, ``auto`` (the competition's ``train_soundscapes_labels.csv``), or
    empty (none); a missing table is a warning, not a stop."""
    if not setting:
        return None
    table = competition_dir / "train_soundscapes_labels.csv" if setting == "auto" else Path(setting)
    if not table.is_file():
        log.warning("--priors %s: no such table; no priors", table)
        return None
    priors = SiteHourPriors.from_labels(table, columns, strength)
    log.info("site and hour priors from %s: %d sites, %d hour bins, strength %g", table, len(priors.site_ratio),
             len(priors.hour_ratio), strength)
    return priors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    audio_dir, limit = Path(args.audio_dir), args.limit
    budget_minutes = budget_from_arg(args.time_budget_minutes, audio_dir.parent)
    columns_dir = audio_dir
    try:
        audio_dir, dry_limit = prediction_folder(audio_dir)
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 1
    limit = dry_limit or limit
    competition_dir = columns_dir.parent
    facts = competition_facts(competition_dir)
    row_s = args.row_seconds or (facts.row_s if facts else ROW_S)  # the scorer's rows, whatever the models take
    try:
        tricks = trick_settings(args, row_s)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    t0 = time.perf_counter()
    try:
        classes = species_columns(args.sample_submission, columns_dir, []) if any(
            is_teacher(c) for c in args.checkpoint) else []  # a teacher member maps its classes onto these
        predictor = SoundscapePredictor(args.checkpoint, batch_size=args.batch_size, backend=args.backend,
                                        threads=args.threads, row_s=row_s, precision=args.precision,
                                        classes=classes, data_dir=competition_dir,
                                        openvino_mode=args.openvino_mode, **tricks)
        log.info("tricks: %s", "; ".join(describe(predictor.row_windows, predictor.post)
                                         + ([f"{args.blend} blend"] if args.blend != "mean" else [])) or "none")
    except (CheckpointError, EmbedderError, ValueError) as exc:  # one line naming the file (or the model to attach)
        log.error("%s", exc)
        return 2
    columns = species_columns(args.sample_submission, columns_dir, predictor.labels)
    unpredicted = [c for c in columns if c not in set(predictor.labels)]
    if unpredicted:
        log.warning("%d of %d columns are predicted by no member and get 0.0: %s%s", len(unpredicted), len(columns),
                    ", ".join(unpredicted[:20]), " ..." if len(unpredicted) > 20 else "")
    budget_s = budget_minutes * 60 - (time.perf_counter() - t0) if budget_minutes else None
    unreadable_s = scored_file_seconds(competition_dir)
    priors = load_priors(args.priors, args.prior_strength, competition_dir, columns)
    try:
        frame = predict_folder(predictor, audio_dir, columns, fill_value=args.fill_value, limit=limit,
                               decode_threads=decode_threads(args), budget_s=budget_s, unreadable_s=unreadable_s,
                               priors=priors)
    except Exception:  # noqa: BLE001 - a submission is always written: every file's rows get the fill value
        log.exception("prediction failed; every file gets %s so that a valid submission is still written",
                      args.fill_value)
        files = audio_files(audio_dir)[:limit]
        frame = pd.concat([fill_rows(f, row_s, predictor.labels, columns, args.fill_value, unreadable_s)
                           for f in files], ignore_index=True) if files else pd.DataFrame(columns=["row_id", *columns])
    out = write_submission(frame, columns, args.out)
    log.info("%d rows, %d files -> %s in %.1f s", len(frame), frame["row_id"].str.rsplit("_", n=1).str[0].nunique(),
             out, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
