"""Soundscape inference: decode once, one mel per file (the training front end), 5-s windows, every model.

Imports nothing from training (no trainer, optimizers, neptune or kaggle), so it runs in an offline
Kaggle notebook.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from tqdm import tqdm

from dataloader.audio import AudioError, audio_files
from dataloader.features import frontend_of_checkpoint
from dataloader.standardize import Standardizer
from inference.backends import Runner, load_metadata, make_runner
from inference.submission import n_windows, row_ids, to_submission_frame

log = logging.getLogger(__name__)
BATCH_SIZE = 32  # windows per model call: at 64, OpenVINO and ONNX Runtime ran 5-40 % slower on this CPU


class SoundscapePredictor:
    """An ensemble of models (checkpoints ``.pt``, or exports ``.onnx``/``.xml``) sharing one front end;
    ``predict_file`` gives per-window probabilities, optionally smoothed over ±``smooth`` neighbouring windows."""

    def __init__(self, checkpoints: Sequence[str | Path], device: str = "cpu", batch_size: int = BATCH_SIZE,
                 backend: str = "auto", threads: int = 0, smooth: int = 0, row_s: Optional[float] = None,
                 precision: str = "f32"):
        """``precision``: OpenVINO's inference precision (f32, or bf16 where the CPU has it). ``row_s``: the length of a submission row (default: the models' input length, 5 s for BirdCLEF).
        Models trained on longer inputs (e.g. 10 s) see a context window centred on each row."""
        payloads = [load_metadata(p) for p in checkpoints]
        if not payloads:
            raise ValueError("at least one checkpoint is needed")
        first = payloads[0]
        for p, payload in zip(checkpoints, payloads):
            if payload["data_process"] != first["data_process"] or payload["window_s"] != first["window_s"]:
                raise ValueError(f"{p}: front-end settings differ from {checkpoints[0]}; an ensemble shares one mel")
        self.input_s = float(first["window_s"])  # what the models were trained on
        self.window_s = float(row_s or self.input_s)  # one submission row
        if self.input_s < self.window_s:
            raise ValueError(f"the models take {self.input_s}-s inputs, shorter than a {self.window_s}-s row")
        self.pad_mode = first.get("pad_mode", "repeat")
        self.standardizer = Standardizer.from_dict(first["standardizer"])
        self.frontend = frontend_of_checkpoint(first)  # the training front end: mel, or raw samples (Wav2Vec2)
        self.sample_rate = self.frontend.sample_rate
        self.frames = self.frontend.frames_for(self.window_s)
        self.input_frames = self.frontend.frames_for(self.input_s)
        self.batch_size, self.smooth = batch_size, smooth
        self.labels: list[str] = []
        self.models: list[tuple[Runner, np.ndarray, str, Optional[tuple[np.ndarray, np.ndarray]]]] = []
        for payload in payloads:
            self.labels.extend(label for label in payload["labels"] if label not in self.labels)
        for path, payload in zip(checkpoints, payloads):
            # each model fitted its own statistics on its own training split (another fold: other values); the
            # windows are standardised once with the first model's, and mapped onto each other model's own
            own = Standardizer.from_dict(payload["standardizer"])
            self.models.append((make_runner(path, backend, device, threads, precision),
                                np.array([self.labels.index(lbl) for lbl in payload["labels"]]),
                                payload.get("activation", "sigmoid"), own.conversion_from(self.standardizer)))

    def windows(self, path: str | Path, max_windows: Optional[int] = None) -> np.ndarray:
        """(n_windows, 1, rows, frames) float32 for a soundscape (the first ``max_windows`` when given, decoding
        only what they need); the last partial window is padded. The features and windows are the cache's and the
        training datasets' own: :meth:`~dataloader.features.FrontEnd.features` and ``windows``."""
        limit = None if max_windows is None else max_windows * self.window_s + self.input_s
        features, seconds = self.frontend.features(path, limit)
        clip = self.standardizer.clip_stats(features) if self.standardizer.mode == "per_clip" else ()
        count = n_windows(seconds, self.window_s)
        if max_windows is not None:
            count = min(count, max_windows)
        return self.frontend.windows(features, count, self.frames, self.standardizer, clip, self.pad_mode,
                                     self.input_frames)

    def predict_windows(self, windows: np.ndarray) -> np.ndarray:
        """Mean probability over the ensemble (each model's own activation: sigmoid, or softmax for a model
        trained with softmax cross-entropy; each model's own standardisation statistics), (n_windows,
        len(self.labels)). ``windows``: from :meth:`windows` (standardised with the first model's statistics)."""
        total = np.zeros((len(windows), len(self.labels)), dtype=np.float32)
        counts = np.zeros(len(self.labels), dtype=np.float32)
        for run, columns, activation, conversion in self.models:
            for i in range(0, len(windows), self.batch_size):
                batch = windows[i:i + self.batch_size]
                if conversion is not None:  # this model's own standardisation statistics
                    scale, shift = conversion
                    batch = batch * scale[:, None] + shift[:, None]
                logits = torch.from_numpy(np.asarray(run(batch), dtype=np.float32))
                probs = torch.softmax(logits, dim=1) if activation == "softmax" else torch.sigmoid(logits)
                total[i:i + len(logits), columns] += probs.numpy()
            counts[columns] += 1
        probs = total / np.maximum(counts, 1)
        return smooth_windows(probs, self.smooth) if self.smooth else probs

    def predict_file(self, path: str | Path) -> tuple[list[str], np.ndarray]:
        """Row ids and probabilities for every window of ``path``."""
        probs = self.predict_windows(self.windows(path))
        return row_ids(Path(path).stem, len(probs), self.window_s), probs


def smooth_windows(probs: np.ndarray, k: int) -> np.ndarray:
    """Mean over each window and its ±``k`` neighbours in the same file (edges use the windows they have)."""
    if k <= 0 or len(probs) < 2:
        return probs
    cum = np.vstack([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0, dtype=np.float64)])
    idx = np.arange(len(probs))
    lo, hi = np.maximum(idx - k, 0), np.minimum(idx + k + 1, len(probs))
    return ((cum[hi] - cum[lo]) / (hi - lo)[:, None]).astype(np.float32)


class ClockGuard:
    """Keeps a submission inside its time budget (Kaggle: 120 CPU minutes, or no score at all). After each
    file it projects the finish from the pace so far; while the projection overruns ``budget_s`` it drops the
    last model of the ensemble (list models best first), and once the budget is spent the remaining files get
    the fill value, so a valid submission is always written."""

    def __init__(self, budget_s: float, files: int, min_files: int = 2):
        self.budget_s, self.files, self.min_files = budget_s, files, min_files
        self.t0 = time.perf_counter()
        self.dropped: list[int] = []
        self.announced = False
        self.pace_since, self.done_since = self.t0, 0  # the pace is measured anew after each drop

    def spent(self) -> bool:
        return time.perf_counter() - self.t0 > self.budget_s

    def after_file(self, done: int, predictor: "SoundscapePredictor") -> None:
        """Called after ``done`` files; drops an ensemble member when the projected finish overruns."""
        now = time.perf_counter()
        since = done - self.done_since
        if since < self.min_files or len(predictor.models) < 2:
            return
        projected = now - self.t0 + (now - self.pace_since) / since * (self.files - done)
        if projected > self.budget_s:
            predictor.models.pop()
            self.dropped.append(done)
            log.warning("clock guard: %d files would take %.0f s of a %.0f s budget; dropped the last model after "
                        "file %d, %d model(s) left", self.files, projected, self.budget_s, done,
                        len(predictor.models))
            self.pace_since, self.done_since = now, done


def predict_folder(predictor: SoundscapePredictor, audio_dir: str | Path, columns: Sequence[str],
                   fill_value: float = 0.0, limit: Optional[int] = None, decode_threads: int = 1,
                   budget_s: Optional[float] = None) -> pd.DataFrame:
    """Submission frame for the audio files of ``audio_dir`` (OGG, WAV, FLAC, MP3, any case; sorted; the first
    ``limit`` when given).

    Decoding and the mel of the next files run in ``decode_threads`` background threads (soundfile and the
    FFTs release the GIL, so they use other cores) while the models work on the current file; at most
    ``decode_threads + 1`` files wait decoded, so memory stays bounded. An unreadable file gets rows of
    ``fill_value`` and a warning instead of stopping the submission. With ``budget_s`` a :class:`ClockGuard`
    keeps the whole folder within that many seconds."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    files = audio_files(audio_dir)[:limit]
    frames = []
    guard = ClockGuard(budget_s, len(files)) if budget_s else None

    def load(path: Path) -> Optional[np.ndarray]:
        try:
            return predictor.windows(path)
        except AudioError as exc:
            log.warning("%s: %s -- its rows get %s", path.name, exc, fill_value)
            return None

    prefetch = decode_threads + 1
    with ThreadPoolExecutor(max_workers=decode_threads) as pool:
        pending = [pool.submit(load, p) for p in files[:prefetch]]
        for k, path in enumerate(tqdm(files, desc="predict soundscapes", unit="file")):
            over = guard is not None and guard.spent()
            windows = pending.pop(0).result() if pending else None
            if k + prefetch < len(files) and not over:
                pending.append(pool.submit(load, files[k + prefetch]))
            if over:  # rows of fill_value: a late submission scores nothing at all
                if not guard.announced:
                    log.warning("clock guard: the %.0f s budget is spent; %s and the %d files after it get %s",
                                guard.budget_s, path.name, len(files) - k - 1, fill_value)
                    guard.announced = True
                windows = None
            if windows is not None:
                probs = predictor.predict_windows(windows)
                ids = row_ids(path.stem, len(probs), predictor.window_s)
            else:
                try:
                    count = n_windows(sf.info(str(path)).duration, predictor.window_s)
                except (sf.LibsndfileError, RuntimeError, ValueError):  # the header is unreadable too
                    count = n_windows(240.0, predictor.window_s)
                ids = row_ids(path.stem, count, predictor.window_s)
                probs = np.full((count, len(predictor.labels)), fill_value, dtype=np.float32)
            frames.append(to_submission_frame(ids, probs, predictor.labels, columns))
            if guard is not None:
                guard.after_file(k + 1, predictor)
    if not frames:
        return pd.DataFrame(columns=["row_id", *columns])
    return pd.concat(frames, ignore_index=True)
