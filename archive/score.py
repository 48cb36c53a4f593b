"""A classifier over the whole archive without embedding it again: every window's vector read from the database,
scored by an active-learning round's head, written as ``detect.py``'s tables (scores, merged detections, Raven
selection tables, per-file summary).

    python -m archive.score --db ARCHIVE_DB --checkpoint ARCHIVE_DB/rounds/round_003/classifier.pt
                            [--thresholds .../thresholds.csv] [--out-dir archive_detections] [--min-score 0.1]

The thresholds default to the round's own ``thresholds.csv`` beside the checkpoint. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archive.active_learning import archive_probs  # noqa: E402
from archive.database import open_archive, settings_of  # noqa: E402
from inference.detections import FileScores  # noqa: E402


def load_head(checkpoint: str | Path) -> tuple[Any, list[str]]:
    """(the head, its classes) of a classifier checkpoint."""
    from factory.families import model_from_checkpoint  # noqa: PLC0415
    from utils.checkpoints import ModelMeta, load_checkpoint  # noqa: PLC0415

    payload = load_checkpoint(checkpoint)
    meta = ModelMeta.from_payload(payload)
    if meta.input != "embedding":
        raise ValueError(f"{checkpoint}: a {meta.input} model; the archive is scored by a head on its embeddings "
                         f"(python -m archive.active_learning writes one)")
    return model_from_checkpoint(payload).eval(), list(meta.labels)


def recording_scores(db: Any, model: Any) -> Iterator[FileScores]:
    """Each recording's window scores, in file order."""
    windows, probs = archive_probs(db, model)
    durations = dict(db.db.execute("SELECT filename, duration_s FROM recordings"))
    windows = windows.assign(row=np.arange(len(windows))).sort_values(["file", "start_s"])
    for file, part in windows.groupby("file", sort=True):
        rows = part["row"].to_numpy()
        duration = float(durations.get(file) or part["end_s"].max())
        ends = np.minimum(part["end_s"].to_numpy(), max(duration, 1e-3))
        yield FileScores(file, duration, len(rows), part["start_s"].to_numpy(), ends, probs[rows])


def main(argv: Optional[list[str]] = None) -> int:
    from inference.detection_tables import write_tables  # noqa: PLC0415
    from inference.detections import load_thresholds  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--checkpoint", required=True, help="a round's classifier.pt")
    p.add_argument("--thresholds", default=None, help="class,threshold CSV (default: the round's thresholds.csv)")
    p.add_argument("--threshold", type=float, default=0.5, help="for classes the thresholds do not list")
    p.add_argument("--min-score", type=float, default=0.1, help="scores below this stay out of scores.csv")
    p.add_argument("--out-dir", default="archive_detections")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    db = open_archive(args.db, readonly=True)
    settings = settings_of(db)
    model, classes = load_head(args.checkpoint)
    own = Path(args.checkpoint).with_name("thresholds.csv")
    thresholds = load_thresholds(args.thresholds or (own if own.is_file() else None), classes, args.threshold)
    high = settings.sample_rate / 2
    run = write_tables(recording_scores(db, model), classes, thresholds, args.min_score, args.out_dir, 0.0, high)
    seconds = time.perf_counter() - t0
    print(json.dumps({"recordings": run.files, "windows": run.windows, "audio_hours": round(run.audio_s / 3600, 3),
                      "detections": run.detections, "seconds": round(seconds, 2),
                      "windows_per_s": round(run.windows / max(seconds, 1e-9), 1), "out_dir": str(run.out_dir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
