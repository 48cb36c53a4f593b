"""Budget planner: does an ensemble fit Kaggle's 120 CPU minutes, and with how much margin?

    python -m inference.budget --model A.onnx B.xml C.pt [--kaggle-speedup 1.0] [--budget-minutes 120]

Measures on this machine the shared front end (decode + mel of generated 4-minute soundscapes, per window)
and each model alone with its own backend (windows per second on pre-made windows), then projects the
BirdCLEF 2024 test set (~52,800 windows) as front end + every model, divided by ``--kaggle-speedup`` (how much
faster you take Kaggle's 4-core CPU to be than this machine; 1.0 = the same, a cautious default). Prints one
JSON line per component and a verdict line with ``fits``, ``projected_minutes`` and ``margin_minutes``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inference.backends import load_metadata, make_runner  # noqa: E402
from inference.export import input_shape  # noqa: E402
from inference.predict import BATCH_SIZE, SoundscapePredictor  # noqa: E402

TEST_WINDOWS = 52_800
BUDGET_MINUTES = 120.0


def generate_soundscapes(folder: Path, files: int, seconds: float = 240.0) -> Path:
    """``files`` soundscapes of brown-ish noise with intermittent chirps, 32 kHz OGG (for timing only)."""
    from dataloader.demo import write_ogg  # noqa: PLC0415

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


def frontend_seconds_per_window(model: str | Path, files: int = 2) -> float:
    """Decode + mel + windowing seconds per 5-s window (one core), on generated 4-minute soundscapes."""
    predictor = SoundscapePredictor([model])
    with tempfile.TemporaryDirectory() as tmp:
        folder = generate_soundscapes(Path(tmp), files)
        t0, windows = time.perf_counter(), 0
        for path in sorted(folder.glob("*.ogg")):
            windows += len(predictor.windows(path))
        return (time.perf_counter() - t0) / windows


def model_windows_per_s(model: str | Path, batch: int = BATCH_SIZE, n: int = 192, threads: int = 0) -> float:
    """Windows per second of ``model`` alone with its backend on pre-made inputs."""
    run = make_runner(model, threads=threads)
    x = np.random.default_rng(0).standard_normal((n, *input_shape(load_metadata(model)))).astype(np.float32)
    run(x[:batch])
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        run(x[i:i + batch])
    return n / (time.perf_counter() - t0)


def plan(models: list[str], kaggle_speedup: float = 1.0, budget_minutes: float = BUDGET_MINUTES,
         test_windows: int = TEST_WINDOWS, files: int = 2) -> list[dict]:
    """One row per component and the verdict (last row)."""
    front = frontend_seconds_per_window(models[0], files)
    rows = [{"component": "decode+mel", "seconds_per_window": round(front, 5),
             "projected_minutes": round(test_windows * front / kaggle_speedup / 60, 1)}]
    total = front
    for model in models:
        speed = model_windows_per_s(model)
        total += 1 / speed
        rows.append({"component": str(model), "windows_per_s": round(speed, 1),
                     "projected_minutes": round(test_windows / speed / kaggle_speedup / 60, 1)})
    minutes = test_windows * total / kaggle_speedup / 60
    rows.append({"models": len(models), "kaggle_speedup": kaggle_speedup, "test_windows": test_windows,
                 "projected_minutes": round(minutes, 1), "budget_minutes": budget_minutes,
                 "fits": minutes <= budget_minutes, "margin_minutes": round(budget_minutes - minutes, 1),
                 "margin_share": round(1 - minutes / budget_minutes, 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", required=True, help=".pt checkpoints and/or exported .onnx/.xml models")
    p.add_argument("--kaggle-speedup", type=float, default=1.0)
    p.add_argument("--budget-minutes", type=float, default=BUDGET_MINUTES)
    p.add_argument("--test-windows", type=int, default=TEST_WINDOWS)
    p.add_argument("--files", type=int, default=2, help="generated soundscapes to time the front end on")
    args = p.parse_args(argv)
    rows = plan(args.model, args.kaggle_speedup, args.budget_minutes, args.test_windows, args.files)
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0 if rows[-1]["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
