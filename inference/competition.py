"""The competition stage of a training run: the submission for a Kaggle-layout data folder's test soundscapes
(or, when there are none, a dry run over a few unlabeled ones), written and, for the demo, scored."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from dataloader.audio import audio_files
from dataloader.sources.editions import ROW_S, competition_facts, dry_run_folder, scored_file_seconds
from dataloader.sources.registry import SourceData
from inference.predict import SoundscapePredictor, predict_folder
from inference.submission import write_submission

log = logging.getLogger(__name__)
DRY_RUN_FILES = 3  # unlabeled soundscapes predicted when test_soundscapes/ is empty


def prediction_folder(test_dir: str | Path, soundscape_dir: Optional[str | Path] = None
                      ) -> tuple[Path, Optional[int]]:
    """(folder to predict, file limit): ``test_dir`` whole, or when it holds no audio (as outside Kaggle's
    scoring) a dry run over the first ``DRY_RUN_FILES`` of ``soundscape_dir`` (default: the edition's sibling
    folder, ``train_soundscapes/`` or ``unlabeled_soundscapes/``). Shared by ``predict.py`` and a run's
    submission stage; FileNotFoundError when there is nothing to predict."""
    test_dir = Path(test_dir)
    if audio_files(test_dir):
        return test_dir, None
    dry = Path(soundscape_dir) if soundscape_dir else dry_run_folder(test_dir)
    if dry is None or not audio_files(dry):
        raise FileNotFoundError(f"no audio in {test_dir}, and no train_soundscapes/ or unlabeled_soundscapes/ "
                                f"beside it for a dry run")
    log.info("%s is empty (as outside Kaggle scoring): dry run on %d files of %s", test_dir, DRY_RUN_FILES, dry)
    return dry, DRY_RUN_FILES


def species_columns(sample_submission: Optional[str | Path], test_dir: str | Path, labels: Sequence[str]
                    ) -> list[str]:
    """The submission's species columns: from ``sample_submission.csv`` (given, or beside the test folder), else
    the models' labels, sorted."""
    path = Path(sample_submission) if sample_submission else Path(test_dir).parent / "sample_submission.csv"
    if path.is_file():
        return list(pd.read_csv(path, nrows=0).columns)[1:]
    if sample_submission:
        raise FileNotFoundError(f"--sample-submission {path}: no such file")
    log.warning("no sample_submission.csv beside %s: columns are the models' %d labels", test_dir, len(labels))
    return sorted(labels)


def submit(checkpoints: Sequence[str], source: SourceData, out_csv: Path, copy_to: Path, device: str = "cpu",
           batch_size: int = 64) -> dict[str, Any]:
    """Predict the test soundscapes of ``source`` (a :class:`dataloader.sources.SourceData`) with the checkpoints,
    write the validated CSV (``sample_submission.csv``'s columns) to ``out_csv`` (and a copy to ``copy_to``);
    returns rows, speed and, when the source has a ground truth (the demo's), the score. With no test soundscape
    (as outside Kaggle's scoring), a dry run predicts a few of the source's own soundscapes. On ``device = cuda``
    the models run on the GPU in batches of ``batch_size`` windows across files, decoded by every other core."""
    from utils.metrics import competition_score  # noqa: PLC0415
    from inference.file_pipeline import default_decode_threads  # noqa: PLC0415

    audio_dir, limit = prediction_folder(source.test_dir, source.soundscape_dir)
    facts = competition_facts(source.data_dir)
    predictor = SoundscapePredictor(checkpoints, device=device, batch_size=batch_size,
                                    row_s=facts.row_s if facts else ROW_S)
    columns = source.classes or species_columns(None, source.test_dir, predictor.labels)
    # on a GPU the models wait for the CPU's decoding and mels: every other core decodes ahead; on a CPU the
    # models need the cores, and one thread decoding ahead is what measured fastest
    decode_threads = default_decode_threads(device)
    t0 = time.perf_counter()
    frame = predict_folder(predictor, audio_dir, columns, limit=limit, decode_threads=decode_threads,
                           unreadable_s=scored_file_seconds(source.data_dir))
    seconds = time.perf_counter() - t0
    out = write_submission(frame, columns, out_csv)
    frame.to_csv(copy_to, index=False, float_format="%.6f")
    result: dict[str, Any] = {"submission": str(out), "submission_rows": len(frame),
                              "predict_windows_per_s": round(len(frame) / max(seconds, 1e-9), 1),
                              "predict_device": device}
    if source.ground_truth is not None and audio_dir == source.test_dir:
        truth = pd.read_csv(source.ground_truth, dtype={"row_id": str})
        result["soundscape_score"] = round(competition_score(truth, frame[frame["row_id"].isin(truth["row_id"])],
                                                             "row_id"), 6)
    return result
