"""The teacher's soft targets for distillation: a trained checkpoint's probabilities for every training row."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

log = logging.getLogger(__name__)


def teacher_targets(table: pd.DataFrame, labels: Sequence[str], checkpoint: str | Path, row_frames: int
                    ) -> np.ndarray:
    """(rows, len(labels)) float32: for a recording, the teacher's highest probability of each class over its 5-s
    rows (the species calls somewhere in it, as its label says); for a window cut at frame ``start`` (chunks,
    soundscape windows), the teacher's row holding that start (``row_frames`` frames per row). Classes the teacher
    does not predict get NaN (left out of the soft term). Each file is predicted once."""
    from inference.predict import SoundscapePredictor  # noqa: PLC0415 - the inference path, only when distilling

    teacher = SoundscapePredictor([checkpoint])
    columns = [teacher.labels.index(c) if c in teacher.labels else -1 for c in labels]
    missing = [c for c, j in zip(labels, columns) if j < 0]
    if missing:
        log.warning("distillation: the teacher %s does not predict %d of %d classes (%s); they get no soft target",
                    checkpoint, len(missing), len(labels), ", ".join(missing[:10]))
    per_file = {p: teacher.predict_file(p)[1] for p in tqdm(sorted(set(table["path"])), desc="teacher", unit="file")}
    starts = table["start"].fillna(-1).astype(int) if "start" in table else [-1] * len(table)
    out = np.full((len(table), len(labels)), np.nan, dtype=np.float32)
    for r, (path, start) in enumerate(zip(table["path"], starts)):
        probs = per_file[path]
        row = probs.max(axis=0) if start < 0 else probs[min(start // row_frames, len(probs) - 1)]
        for c, j in enumerate(columns):
            if j >= 0:
                out[r, c] = row[j]
    log.info("distillation: soft targets of %s for %d training rows of %d files", Path(checkpoint).name, len(table),
             len(per_file))
    return out
