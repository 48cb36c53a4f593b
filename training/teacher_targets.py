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
