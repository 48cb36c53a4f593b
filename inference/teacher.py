"""A foundation model as teacher: its own classes mapped onto the competition's give pseudo-labels for soundscapes.

    python -m inference.teacher --model birdnet --data-dir data/birdclef-2025 --audio-dir .../train_soundscapes
                                --out pseudo_round1.csv [--model-path FILE] [--limit N]

Writes ``row_id`` + one probability column per class of ``sample_submission.csv`` (sigmoid of the model's logit for
the class it maps to, 0 for classes it cannot map), the CSV ``[data] pseudo_labels`` reads, and beside it
``<out>.label_map.json`` (every mapped class with the model label and whether it matched by eBird code or by
scientific name, and the unmapped classes). A later round is ``predict.py`` over the same soundscapes with the model
trained on this round: config changes only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader.audio import AudioError, audio_files  # noqa: E402
from dataloader.embedding_input import embedding_settings  # noqa: E402
from dataloader.features import make_frontend  # noqa: E402
from dataloader.label_map import map_labels, scientific_names  # noqa: E402
from inference.competition import species_columns  # noqa: E402
from inference.submission import row_ids, to_submission_frame  # noqa: E402


def teacher_pseudo_labels(model: str, data_dir: str | Path, audio_dir: str | Path, model_path: str = "",
                          limit: int | None = None) -> tuple[pd.DataFrame, dict]:
    """(pseudo-label frame, label-map report) of the soundscapes of ``audio_dir`` for ``data_dir``'s classes."""
    frontend = make_frontend(embedding_settings(model, model_path, 5.0))
    teacher = frontend.model
    classes = species_columns(None, Path(data_dir) / "test_soundscapes", teacher.labels)
    mapping = map_labels(teacher.labels, classes, scientific_names(data_dir))
    frames = []
    for path in tqdm(audio_files(audio_dir)[:limit], desc=f"teacher ({model})", unit="file"):
        try:
            logits = frontend.row_logits(path)
        except AudioError as exc:
            print(f"inference.teacher: {path.name}: {exc} -- skipped", file=sys.stderr)
            continue
        frames.append(to_submission_frame(row_ids(path.stem, len(logits), 5.0), mapping.apply(logits), classes,
                                          classes))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["row_id", *classes])
    report = {"classes": len(classes), "mapped": len(mapping.index), "unmapped": len(mapping.unmapped),
              "by_code": sum(b == "code" for b in mapping.by.values()),
              "by_scientific_name": sum(b == "scientific_name" for b in mapping.by.values())}
    return frame, {"report": report, "map": mapping, "labels": teacher.labels}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="birdnet")
    p.add_argument("--model-path", default="")
    p.add_argument("--data-dir", required=True, help="the competition folder (sample_submission.csv, taxonomy)")
    p.add_argument("--audio-dir", required=True, help="soundscapes to pseudo-label")
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int)
    args = p.parse_args(argv)
    frame, info = teacher_pseudo_labels(args.model, args.data_dir, args.audio_dir, args.model_path, args.limit)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.6f")
    info["map"].write(out.with_suffix(".label_map.json"), info["labels"])
    high = int((frame.drop(columns="row_id").to_numpy(np.float32).max(axis=1) >= 0.5).sum()) if len(frame) else 0
    print(json.dumps({**info["report"], "rows": len(frame), "rows_with_a_class_at_0.5": high, "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
