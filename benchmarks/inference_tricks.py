"""Each inference trick's effect and cost on labelled test soundscapes, printed as JSON lines (one run, ratios
against the plain submission of the same run).

    python benchmarks/inference_tricks.py --checkpoint runs/<id>/checkpoints/best.pt \\
        --audio-dir data/demo-2026/test_soundscapes --ground-truth data/demo-2026/test_soundscapes_ground_truth.csv \\
        [--competition birdclef-2026] [--repeats 2]

For every variant (``predict.py``'s settings: none; ``--smooth 1``; ``--shift-tta 1.25``; ``--row-hop 2.5``;
``--peak-scale 0.5`` and ``1``; combinations; ``--priors`` at strength 0.5 and 1 with ``--priors TABLE``;
``--blend rank`` with two or more checkpoints), the submission's macro ROC-AUC (the competition metric, columns
with a positive only) and its time: seconds per row, the ratio to the plain run, and the minutes it projects for
the competition's hidden test set on this machine (``inference.budget``'s facts: 7,200 rows for 2026) divided by
nothing (this CPU, not Kaggle's). The best of ``--repeats`` passes counts (a shared machine's speed drifts).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataloader.sources.editions import COMPETITIONS  # noqa: E402
from inference.file_pipeline import default_decode_threads  # noqa: E402
from inference.postprocess import RowWindows  # noqa: E402
from inference.predict import SoundscapePredictor, predict_folder  # noqa: E402
from inference.priors import SiteHourPriors  # noqa: E402
from utils.metrics import competition_score  # noqa: E402

# name -> (SoundscapePredictor keywords): each trick alone, then the ones worth combining
VARIANTS: dict[str, dict[str, Any]] = {
    "none": {},
    "smooth_1": {"smooth": 1},
    "shift_tta_1.25": {"row_windows": RowWindows.shifts(1.25)},
    "row_hop_2.5": {"row_windows": RowWindows.hop(5.0, 2.5)},
    "peak_scale_0.5": {"peak_power": 0.5},
    "peak_scale_1": {"peak_power": 1.0},
    "smooth_1+peak_scale_0.5": {"smooth": 1, "peak_power": 0.5},
    "row_hop_2.5+smooth_1+peak_scale_0.5": {"row_windows": RowWindows.hop(5.0, 2.5), "smooth": 1, "peak_power": 0.5},
    "priors_0.5": {"priors": 0.5},  # with --priors
    "priors_1": {"priors": 1.0},
    "rank_blend": {"blend": "rank"},  # with two or more checkpoints
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", nargs="+", required=True)
    p.add_argument("--audio-dir", required=True)
    p.add_argument("--ground-truth", required=True, help="row_id + one 0/1 column per class")
    p.add_argument("--competition", default="birdclef-2026", choices=sorted(COMPETITIONS))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--priors", help="a labelled-soundscape table (train_soundscapes_labels.csv) for the priors rows")
    p.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="these variants alone (none is the baseline: "
                   "list it first)")
    args = p.parse_args(argv)
    truth = pd.read_csv(args.ground_truth, dtype={"row_id": str})
    columns = list(truth.columns[1:])
    rows_hidden = COMPETITIONS[args.competition].test_windows
    baseline = None
    for name, settings in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        settings = dict(settings)
        strength = settings.pop("priors", None)
        if (strength and not args.priors) or (settings.get("blend") == "rank" and len(args.checkpoint) < 2):
            continue
        best, frame = float("inf"), None
        for _ in range(args.repeats):
            predictor = SoundscapePredictor(args.checkpoint, **settings)
            t0 = time.perf_counter()
            priors = SiteHourPriors.from_labels(args.priors, columns, strength) if strength else None
            frame = predict_folder(predictor, args.audio_dir, columns, decode_threads=default_decode_threads(),
                                   priors=priors)
            best = min(best, time.perf_counter() - t0)
        score = competition_score(truth, frame[frame["row_id"].isin(truth["row_id"])], "row_id")
        per_row = best / len(frame)
        baseline = baseline or {"score": score, "per_row": per_row}
        print(json.dumps({"variant": name, "macro_roc_auc": round(score, 4),
                          "delta_vs_none": round(score - baseline["score"], 4), "rows": len(frame),
                          "seconds": round(best, 2), "seconds_per_row": round(per_row, 5),
                          "time_ratio_vs_none": round(per_row / baseline["per_row"], 2),
                          "projected_minutes_here": round(per_row * rows_hidden / 60, 1),
                          "competition": args.competition}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
