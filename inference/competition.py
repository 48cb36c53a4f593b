"""The competition stage of a training run: the submission for a Kaggle-layout data folder's test soundscapes
(or, when there are none, a dry run over a few unlabeled ones), written and, for the demo, scored."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from dataloader.audio import audio_files
from inference.predict import SoundscapePredictor, predict_folder
from inference.submission import write_submission

log = logging.getLogger(__name__)
DRY_RUN_FILES = 3  # unlabeled soundscapes predicted when test_soundscapes/ is empty


def submit(checkpoints: Sequence[str], source: Any, out_csv: Path, copy_to: Path, device: str = "cpu",
           batch_size: int = 64) -> dict[str, Any]:
    """Predict the test soundscapes of ``source`` (a :class:`dataloader.sources.SourceData`) with the checkpoints,
    write the validated CSV (``sample_submission.csv``'s columns) to ``out_csv`` (and a copy to ``copy_to``);
    returns rows, speed and, when the source has a ground truth (the demo's), the score. With no test soundscape
    (as outside Kaggle's scoring), a dry run predicts a few of the source's own soundscapes."""
    from utils.metrics import competition_score  # noqa: PLC0415

    columns = source.classes
    audio_dir, limit = source.test_dir, None
    if not audio_files(audio_dir):
        audio_dir, limit = source.soundscape_dir, DRY_RUN_FILES
        log.info("%s is empty (as outside Kaggle scoring): dry run on %d files of %s", source.test_dir, limit,
                 audio_dir)
    predictor = SoundscapePredictor(checkpoints, device=device, batch_size=batch_size)
    t0 = time.perf_counter()
    frame = predict_folder(predictor, audio_dir, columns, limit=limit)
    seconds = time.perf_counter() - t0
    out = write_submission(frame, columns, out_csv)
    frame.to_csv(copy_to, index=False, float_format="%.6f")
    result: dict[str, Any] = {"submission": str(out), "submission_rows": len(frame),
                              "predict_windows_per_s": round(len(frame) / max(seconds, 1e-9), 1)}
    if source.ground_truth is not None and audio_dir == source.test_dir:
        truth = pd.read_csv(source.ground_truth, dtype={"row_id": str})
        result["soundscape_score"] = round(competition_score(truth, frame[frame["row_id"].isin(truth["row_id"])],
                                                             "row_id"), 6)
    return result
