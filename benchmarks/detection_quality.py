"""Detection quality against labelled soundscapes, printed as JSON lines: per class, window-level ROC-AUC and the
precision / recall of the windows at or above the class's threshold (a training run's ``thresholds.csv``).

    python benchmarks/detection_quality.py --checkpoint runs/<id>/checkpoints/best.pt \\
        --audio-dir data/demo/test_soundscapes --ground-truth data/demo/test_soundscapes_ground_truth.csv

The ground truth is a Kaggle-style table (``row_id`` = ``<file stem>_<end second>``, one 0/1 column per class) of
5-s windows, so the recordings are scored with a hop of 5 s (the submission's rows). ``--thresholds`` defaults to
the ``thresholds.csv`` beside the checkpoint's run folder.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    import detect  # noqa: PLC0415
    from dataloader.audio import audio_tree  # noqa: PLC0415
    from inference.detections import OutputLayout, load_thresholds, score_folder  # noqa: PLC0415
    from inference.predict import SoundscapePredictor  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--audio-dir", required=True)
    p.add_argument("--ground-truth", required=True)
    p.add_argument("--thresholds")
    args = p.parse_args()
    predictor = SoundscapePredictor([args.checkpoint])
    layout = OutputLayout.of(predictor.labels)
    table = args.thresholds or detect.run_thresholds(args.checkpoint)
    thresholds = pd.read_csv(table).set_index("class") if table else None
    limits = load_thresholds(table, layout.classes, 0.5)
    truth = pd.read_csv(args.ground_truth, dtype={"row_id": str}).set_index("row_id")
    rows, scores = [], []
    for result in score_folder(predictor, audio_tree(args.audio_dir), 5.0, progress=False):
        stem = Path(result.file).stem
        rows.extend(f"{stem}_{int(round(end))}" for end in result.starts + 5.0)
        scores.append(result.scores)
    frame = pd.DataFrame(np.concatenate(scores), index=rows, columns=layout.classes).loc[truth.index]
    per_class = []
    for c, name in enumerate(layout.classes):
        if name not in truth.columns:
            continue
        y, s = truth[name].to_numpy() >= 0.5, frame[name].to_numpy()
        fired = s >= limits[c]
        row = {"class": name, "threshold": round(float(limits[c]), 4), "windows": len(y), "positives": int(y.sum()),
               "auc": round(float(roc_auc_score(y, s)), 4) if 0 < y.sum() < len(y) else None,
               "detected": int(fired.sum()),
               "precision": round(float(y[fired].mean()), 4) if fired.any() else None,
               "recall": round(float(fired[y].mean()), 4) if y.any() else None}
        if thresholds is not None and name in thresholds.index:
            row["validation_precision"] = round(float(thresholds.loc[name, "precision"]), 4)
            row["validation_recall"] = round(float(thresholds.loc[name, "recall"]), 4)
        print(json.dumps(row), flush=True)
        per_class.append((y, fired, row))
    y_all = np.concatenate([y for y, _, _ in per_class])
    fired_all = np.concatenate([f for _, f, _ in per_class])
    macro = {k: [r[k] for _, _, r in per_class if r[k] is not None] for k in ("auc", "precision", "recall")}
    print(json.dumps({"class": "all", "micro_precision": round(float(y_all[fired_all].mean()), 4),
                      "micro_recall": round(float(fired_all[y_all].mean()), 4),
                      **{f"macro_{k}": round(float(np.mean(v)), 4) for k, v in macro.items() if v},
                      "classes": len(per_class)}), flush=True)


if __name__ == "__main__":
    main()
