"""Foundation-model embedding throughput, end to end from OGG (decode, resample, windows, the model), against the
mel front end measured in the same run, and the projected share of each BirdCLEF edition's CPU budget.

    python benchmarks/embeddings.py [--model birdnet] [--model-path FILE] [--files 2] [--seconds 240]

Prints JSON lines: the mel baseline, the embedding model (rows/s = 5-s rows, windows/s = model calls, the ratio of
its time per row to the mel's), then one line per edition: minutes for its test set on this machine and the share of
the edition's usable minutes (limit minus the clock guard's 10-minute margin). Kaggle's CPUs differ: time there with
``python -m inference.budget`` before trusting a margin.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader.embedding_input import embedding_settings  # noqa: E402
from dataloader.features import make_frontend  # noqa: E402
from dataloader.sources.editions import COMPETITIONS, SAFETY_MARGIN_MIN  # noqa: E402
from inference.budget import generate_soundscapes  # noqa: E402
from utils.config_schema import DataProcessConfig  # noqa: E402


def seconds_per_row(frontend, files: list[Path]) -> float:
    """Seconds per 5-s row of ``frontend.features`` over ``files`` (after one warm-up file)."""
    frontend.features(files[0])
    t0, rows = time.perf_counter(), 0
    for path in files:
        features, seconds = frontend.features(path)
        rows += int(round(seconds / 5.0))
    return (time.perf_counter() - t0) / rows


def compare_batches(sizes: list[int], model_path: str = "", windows: int = 64, repeats: int = 2) -> None:
    """BirdNET windows/s per batch size on the same random windows (best of ``repeats``), interleaved."""
    import numpy as np  # noqa: PLC0415

    from dataloader.embedders import BirdNET  # noqa: PLC0415

    x = (0.1 * np.random.default_rng(0).standard_normal((windows, 144000))).astype(np.float32)
    speeds: dict[int, float] = {}
    diffs: dict[int, float] = {}
    reference = None
    for _ in range(repeats):
        for size in sizes:
            model = BirdNET(model_path, batch=size)
            model.embed(x[:size])  # warm-up
            t0 = time.perf_counter()
            embeddings, _ = model.embed(x)
            speeds[size] = max(speeds.get(size, 0.0), windows / (time.perf_counter() - t0))
            reference = embeddings if reference is None else reference
            diffs[size] = float(np.abs(embeddings - reference).max())
    for size in sizes:
        print(json.dumps({"birdnet_batch": size, "windows_per_s": round(speeds[size], 1),
                          "ratio_to_first": round(speeds[size] / speeds[sizes[0]], 2),
                          "max_embedding_diff_to_first": diffs[size]}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="birdnet")
    p.add_argument("--model-path", default="")
    p.add_argument("--files", type=int, default=2)
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[], help="BirdNET only: windows per interpreter "
                   "call to compare (windows/s on the same windows, and the largest embedding difference to batch 1)")
    args = p.parse_args()
    if args.batch_sizes:
        compare_batches(args.batch_sizes, args.model_path)
    embed = make_frontend(embedding_settings(args.model, args.model_path, 5.0))
    windows_per_row = len(embed.row_windows()[1])
    with tempfile.TemporaryDirectory() as tmp:
        files = sorted(generate_soundscapes(Path(tmp), args.files, args.seconds).glob("*.ogg"))
        mel = seconds_per_row(make_frontend(DataProcessConfig()), files)
        emb = seconds_per_row(embed, files)
    print(json.dumps({"front_end": "mel (baseline)", "rows_per_s": round(1 / mel, 1)}))
    print(json.dumps({"front_end": f"{args.model} embeddings", "rows_per_s": round(1 / emb, 1),
                      "windows_per_s": round(windows_per_row / emb, 1), "windows_per_row": windows_per_row,
                      "time_ratio_to_mel": round(emb / mel, 1)}))
    for facts in COMPETITIONS.values():
        minutes = facts.test_windows * emb / 60
        usable = facts.time_limit_min - SAFETY_MARGIN_MIN
        print(json.dumps({"competition": facts.slug, "test_rows": facts.test_windows,
                          "projected_minutes_here": round(minutes, 1), "usable_minutes": usable,
                          "share_of_budget": round(minutes / usable, 2)}))


if __name__ == "__main__":
    main()
