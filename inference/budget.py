"""Budget planner: does an ensemble fit the competition's CPU minutes, and with how much margin?

    python -m inference.budget --model A.onnx B.xml C.pt [--competition birdclef-2026] [--kaggle-speedup 1.0]
                               [predict.py's tricks: --row-hop 2.5 --smooth 1 --peak-scale 0.5 --blend rank ...]

Measures on this machine the shared front end (decode + mel of generated soundscapes, per window) and each model
alone with its own backend (windows per second on pre-made windows), then projects the competition's hidden test
set (its facts from ``[data] competition``: 2024 ~1,100 four-minute files = 52,800 windows in 120 minutes;
2025/2026 ~700 / ~600 one-minute files = 8,400 / 7,200 windows in 90 minutes) as front end + every model, divided
by ``--kaggle-speedup`` (how much faster you take Kaggle's 4-core CPU to be than this machine; 1.0 = the same, a
cautious default). The usable budget is the limit minus a 10-minute safety margin (installing wheels, loading
models, writing the CSV), the clock guard's default. Prints one JSON line per component (with the members that fit
so far) and a verdict line with ``fits``, ``projected_minutes``, ``margin_minutes``, ``members_that_fit`` and
``more_members_like_the_last`` (how many more models of the last one's speed the margin holds).

The inference tricks take ``predict.py``'s settings and are timed as they run: windows per row (shift TTA, a row
hop) multiply the front end's windows (timed with them) and every member's; the per-file and per-folder ones
(smoothing, peak scaling, rank blending, site and hour priors) are one more row, timed on a table of the test
set's size.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader.sources.editions import COMPETITIONS, SAFETY_MARGIN_MIN  # noqa: E402
from inference.backends import load_metadata, make_runner  # noqa: E402
from inference.cli import add_trick_arguments, trick_settings  # noqa: E402
from inference.export import input_shape  # noqa: E402
from inference.postprocess import RowPostprocess, RowWindows, describe  # noqa: E402
from inference.predict import BATCH_SIZE, SoundscapePredictor, rank_blend  # noqa: E402
from inference.priors import SiteHourPriors  # noqa: E402

DEFAULT_COMPETITION = "birdclef-2024"


def generate_soundscapes(folder: Path, files: int, seconds: float = 240.0) -> Path:
    """``files`` soundscapes of brown-ish noise with intermittent chirps, 32 kHz OGG (for timing only)."""
    from dataloader.demo_sounds import write_ogg  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = int(seconds * 32000)
    t = np.arange(n, dtype=np.float32) / 32000
    for k in range(files):
        noise = np.cumsum(rng.standard_normal(n).astype(np.float32)) * 1e-3
        noise -= np.convolve(noise, np.ones(256, np.float32) / 256, mode="same")
        chirp = 0.1 * np.sin(2 * np.pi * (2000 + 500 * np.sin(t)) * t) * (rng.random(n) < 0.3)
        write_ogg(folder / f"bench_{k:02d}.ogg", (noise + chirp).astype(np.float32))
    return folder


def frontend_seconds_per_row(model: str | Path, files: int = 2, row_s: float = 5.0,
                             row_windows: RowWindows = RowWindows()) -> float:
    """Decode + front end (mel, waveform or embeddings) + windowing seconds per ``row_s`` row with
    ``row_windows`` windows per row, on generated 4-minute soundscapes."""
    predictor = SoundscapePredictor([model], row_s=row_s, row_windows=row_windows)
    with tempfile.TemporaryDirectory() as tmp:
        folder = generate_soundscapes(Path(tmp), files)
        t0, windows = time.perf_counter(), 0
        for path in sorted(folder.glob("*.ogg")):
            windows += len(predictor.file_windows(path)[0])
        return (time.perf_counter() - t0) / (windows / row_windows.count)


def postprocess_seconds(files: int, rows_per_file: int, classes: int, members: int, post: RowPostprocess,
                        blend: str = "mean", priors: Optional[SiteHourPriors] = None) -> float:
    """Seconds the per-file and per-folder tricks take over a test set of ``files`` x ``rows_per_file`` rows:
    ``post`` (smoothing, peak scaling) on each file, site and hour ``priors`` on each file (named as the table's
    files are), and a rank blend of ``members`` over the folder."""
    rng = np.random.default_rng(0)
    probs = rng.random((files * rows_per_file, classes * (members if blend == "rank" else 1)), dtype=np.float32)
    labels = priors.classes[:classes] if priors is not None else []
    names = priors_files(priors) if priors is not None else []
    t0 = time.perf_counter()
    for k in range(files):
        part = probs[k * rows_per_file:(k + 1) * rows_per_file, :classes]
        part = post(part)
        if priors is not None:
            priors.apply(names[k % len(names)], part, labels)
    if blend == "rank":
        rank_blend(probs, members, [1.0] * members)
    return time.perf_counter() - t0


def priors_files(priors: SiteHourPriors) -> list[str]:
    """Soundscape names carrying each site and hour bin the priors know (what the test files are named like)."""
    hours = sorted(priors.hour_ratio) or [0]
    return [f"BC_Test_0000_{site}_20250101_{(hour * priors.hour_bin) % 24:02d}0000.ogg"
            for site in sorted(priors.site_ratio) or ["S00"] for hour in hours]


def model_windows_per_s(model: str | Path, batch: int = BATCH_SIZE, n: int = 192, threads: int = 0) -> float:
    """Windows per second of ``model`` alone with its backend on pre-made inputs."""
    run = make_runner(model, threads=threads)
    x = np.random.default_rng(0).standard_normal((n, *input_shape(load_metadata(model)))).astype(np.float32)
    run(x[:batch])
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        run(x[i:i + batch])
    return n / (time.perf_counter() - t0)


def plan(models: list[str], kaggle_speedup: float = 1.0, competition: str = DEFAULT_COMPETITION,
         budget_minutes: Optional[float] = None, test_windows: Optional[int] = None, files: int = 2,
         safety_margin: float = SAFETY_MARGIN_MIN, row_windows: RowWindows = RowWindows(),
         post: RowPostprocess = RowPostprocess(), blend: str = "mean", priors: Optional[SiteHourPriors] = None
         ) -> list[dict]:
    """One row per component (the members that fit so far, then the post-processing tricks when any is on) and
    the verdict (last row), for ``competition``'s test set and time limit unless ``test_windows`` /
    ``budget_minutes`` say otherwise; ``row_windows``, ``post``, ``blend`` and ``priors``: the tricks."""
    facts = COMPETITIONS[competition]
    test_windows = test_windows or facts.test_windows  # rows of the submission
    budget_minutes = budget_minutes or facts.time_limit_min
    usable = budget_minutes - safety_margin
    per_row = row_windows.count  # model windows per submission row
    rows, front_minutes, seen = [], 0.0, set()
    for model in models:  # each front end once (mel, waveform, an embedding model): members sharing it share it
        meta = load_metadata(model)
        key = meta.frontend_key()
        if key in seen:
            continue
        seen.add(key)
        front = frontend_seconds_per_row(model, files, facts.row_s, row_windows)
        front_minutes += test_windows * front / kaggle_speedup / 60
        rows.append({"component": f"decode+{meta.input}", "seconds_per_row": round(front, 5),
                     "windows_per_row": per_row,
                     "projected_minutes": round(test_windows * front / kaggle_speedup / 60, 1)})
    minutes, fitting, member = front_minutes, 0, 0.0
    for k, model in enumerate(models):
        speed = model_windows_per_s(model)
        member = test_windows * per_row / speed / kaggle_speedup / 60
        minutes += member
        if minutes <= usable and fitting == k:  # the clock guard keeps members from the first on
            fitting += 1
        rows.append({"component": str(model), "windows_per_s": round(speed, 1), "windows_per_row": per_row,
                     "projected_minutes": round(member, 1), "cumulative_minutes": round(minutes, 1),
                     "fits_with_the_ones_before": minutes <= usable})
    folder_tricks = describe(RowWindows(), post) + ([f"{blend} blend"] if blend != "mean" else []) + (
        ["site and hour priors"] if priors is not None else [])  # what runs on the rows, not on the windows
    if folder_tricks:
        rows_per_file = max(1, round(facts.test_file_s / facts.row_s))
        files_hidden = max(1, test_windows // rows_per_file)
        classes = max(len(load_metadata(m).labels) for m in models)
        spent = postprocess_seconds(files_hidden, rows_per_file, classes, len(models), post, blend, priors)
        minutes += spent / kaggle_speedup / 60
        rows.append({"component": "tricks: " + "; ".join(folder_tricks), "seconds": round(spent, 2),
                     "projected_minutes": round(spent / kaggle_speedup / 60, 2), "cumulative_minutes": round(minutes, 1)})
    rows.append({"competition": competition, "models": len(models), "kaggle_speedup": kaggle_speedup,
                 "windows_per_row": per_row, "tricks": describe(row_windows, RowPostprocess()) + folder_tricks,
                 "test_windows": test_windows, "projected_minutes": round(minutes, 1),
                 "budget_minutes": budget_minutes, "safety_margin_minutes": safety_margin,
                 "usable_minutes": usable, "fits": minutes <= usable, "margin_minutes": round(usable - minutes, 1),
                 "margin_share": round(1 - minutes / usable, 3), "members_that_fit": fitting,
                 "more_members_like_the_last": int(max(0.0, usable - minutes) // member) if member else 0})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", required=True, help=".pt checkpoints and/or exported .onnx/.xml models")
    p.add_argument("--competition", default=DEFAULT_COMPETITION, choices=tuple(COMPETITIONS),
                   help="its test-set size and CPU limit")
    p.add_argument("--kaggle-speedup", type=float, default=1.0)
    p.add_argument("--budget-minutes", type=float, help="override the competition's CPU limit")
    p.add_argument("--test-windows", type=int, help="override the competition's test windows")
    p.add_argument("--safety-margin", type=float, default=SAFETY_MARGIN_MIN,
                   help="minutes kept for installing wheels, loading models and writing the CSV")
    p.add_argument("--files", type=int, default=2, help="generated soundscapes to time the front end on")
    add_trick_arguments(p)
    args = p.parse_args(argv)
    facts = COMPETITIONS[args.competition]
    tricks = trick_settings(args, facts.row_s)
    priors = None
    if args.priors:
        if not Path(args.priors).is_file():
            p.error(f"--priors {args.priors}: give the labelled-soundscape table itself (train_soundscapes_labels.csv)")
        classes = sorted({lbl for m in args.model for lbl in load_metadata(m).labels})
        priors = SiteHourPriors.from_labels(args.priors, classes, args.prior_strength)
    rows = plan(args.model, args.kaggle_speedup, args.competition, args.budget_minutes, args.test_windows,
                args.files, args.safety_margin, tricks["row_windows"],
                RowPostprocess(tricks["smooth"], tricks["peak_power"]), tricks["blend"], priors)
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0 if rows[-1]["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
