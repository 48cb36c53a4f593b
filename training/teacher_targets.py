"""The teacher's soft targets for distillation: a trained checkpoint's probabilities for every training row."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

log = logging.getLogger(__name__)


def checkpoint_teacher(checkpoint: str | Path, labels: Sequence[str]
                       ) -> tuple[Callable[[str], np.ndarray], list[int]]:
    """(file -> (rows, teacher classes) probabilities, the teacher column of each label or -1): a checkpoint."""
    from inference.predict import SoundscapePredictor  # noqa: PLC0415 - the inference path, only when distilling

    teacher = SoundscapePredictor([checkpoint])
    return (lambda path: teacher.predict_file(path)[1]), [teacher.labels.index(c) if c in teacher.labels else -1
                                                          for c in labels]


def embedding_model_teacher(name: str, labels: Sequence[str], data_dir: str | Path, run_dir: Optional[Path],
                            model_path: str = "") -> tuple[Callable[[str], np.ndarray], list[int]]:
    """The same for a foundation model's own classes mapped onto ``labels`` (``label_map.json`` in ``run_dir``)."""
    from dataloader.embedding_input import embedding_settings  # noqa: PLC0415
    from dataloader.features import make_frontend  # noqa: PLC0415
    from dataloader.label_map import map_labels, scientific_names  # noqa: PLC0415

    frontend = make_frontend(embedding_settings(name, model_path, 5.0))
    mapping = map_labels(frontend.model.labels, labels, scientific_names(data_dir))
    if run_dir is not None:
        mapping.write(run_dir / "label_map.json", frontend.model.labels)
    log.info("distillation: %s maps %d of %d classes (%d by code, %d by scientific name); label_map.json lists the "
             "rest", name, len(mapping.index), len(labels), sum(b == "code" for b in mapping.by.values()),
             sum(b == "scientific_name" for b in mapping.by.values()))
    return (lambda path: 1.0 / (1.0 + np.exp(-frontend.row_logits(path)))), [mapping.index.get(c, -1)
                                                                            for c in labels]


def teacher_targets(table: pd.DataFrame, labels: Sequence[str], teacher: str, row_frames: int,
                    data_dir: str | Path = "", run_dir: Optional[Path] = None, model_path: str = "") -> np.ndarray:
    """(rows, len(labels)) float32: for a recording, the teacher's highest probability of each class over its 5-s
    rows (the species calls somewhere in it, as its label says); for a window cut at frame ``start`` (chunks,
    soundscape windows), the teacher's row holding that start (``row_frames`` frames per row). ``teacher``: a
    checkpoint, or an embedding model name, ``<model>:<path>`` for its file (its classes mapped by code / scientific
    name). Classes the teacher does not predict get NaN (left out of the soft term). Each file is predicted once."""
    from dataloader.embedders import embedder_spec  # noqa: PLC0415

    parsed = embedder_spec(teacher)
    if parsed is not None:
        predict_file, columns = embedding_model_teacher(parsed[0], labels, data_dir, run_dir, parsed[1] or model_path)
    else:
        predict_file, columns = checkpoint_teacher(teacher, labels)
    missing = [c for c, j in zip(labels, columns) if j < 0]
    if missing:
        log.warning("distillation: the teacher %s does not predict %d of %d classes (%s); they get no soft target",
                    teacher, len(missing), len(labels), ", ".join(missing[:10]))
    per_file = {p: predict_file(p) for p in tqdm(sorted(set(table["path"])), desc="teacher", unit="file")}
    starts = table["start"].fillna(-1).astype(int) if "start" in table else [-1] * len(table)
    out = np.full((len(table), len(labels)), np.nan, dtype=np.float32)
    for r, (path, start) in enumerate(zip(table["path"], starts)):
        probs = per_file[path]
        row = probs.max(axis=0) if start < 0 else probs[min(start // row_frames, len(probs) - 1)]
        for c, j in enumerate(columns):
            if j >= 0:
                out[r, c] = row[j]
    log.info("distillation: soft targets of %s for %d training rows of %d files", Path(teacher).name, len(table),
             len(per_file))
    return out


def teacher_embeddings(table: pd.DataFrame, teacher: str, row_s: float, row_frames: int, cache_dir: str | Path,
                       workers: int = 1) -> np.ndarray:
    """(rows, dim) float32: the embedding model ``teacher``'s (``<model>`` or ``<model>:<path>``) embedding of each
    training row, standardised per dimension over the rows: for a recording the mean over its ``row_s`` rows, for a
    window cut at frame ``start`` (chunks, soundscape windows) the row holding that start (``row_frames`` frames per
    row), as :func:`teacher_targets` reads probabilities. The embeddings are the embedding front end's cache (the
    same files an embedding head trains on: parallel, resumable, each file embedded once); a file the model cannot
    read is reported and its rows get NaN, which the regression leaves out."""
    from dataloader.embedders import embedder_spec  # noqa: PLC0415
    from dataloader.embedding_input import embedding_settings  # noqa: PLC0415
    from dataloader.features import make_frontend  # noqa: PLC0415
    from dataloader.preprocess import build_cache  # noqa: PLC0415

    parsed = embedder_spec(teacher)
    if parsed is None:
        raise ValueError(f"embedding distillation: {teacher!r} is not an embedding model (birdnet, perch, onnx; "
                         f"<model>:<path> for its file)")
    frontend = make_frontend(embedding_settings(parsed[0], parsed[1] or "", row_s))
    cache = build_cache(pd.DataFrame({"path": sorted(set(table["path"]))}), frontend, cache_dir, workers)
    entries = dict(zip(cache.table["path"], cache.table["entry"]))
    for path, reason in zip(cache.skipped["path"], cache.skipped["reason"]):
        log.warning("embedding distillation: %s gives no embedding (%s); its rows learn no embedding", path, reason)
    starts = table["start"].fillna(-1).astype(int) if "start" in table else [-1] * len(table)
    out = np.full((len(table), frontend.rows), np.nan, dtype=np.float32)
    for r, (path, start) in enumerate(zip(table["path"], starts)):
        if path in entries:
            rows = np.load(entries[path], mmap_mode="r")  # (dim, rows) float16
            out[r] = rows.mean(axis=1) if start < 0 else rows[:, min(start // row_frames, rows.shape[1] - 1)]
    known = ~np.isnan(out).any(axis=1)
    if known.any():
        mean, std = out[known].mean(axis=0), out[known].std(axis=0)
        out = (out - mean) / np.where(std > 0, std, 1.0)
    log.info("embedding distillation: %s embeddings (%d dimensions, standardised) for %d training rows of %d files "
             "(%d embedded now, %d from the cache %s)", teacher, frontend.rows, len(table), len(entries),
             cache.decoded, cache.reused, cache.folder)
    return out.astype(np.float32)
