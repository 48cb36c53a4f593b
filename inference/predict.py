"""Soundscape inference: decode once, one mel per file (the training front end), 5-s windows, every model.

Imports nothing from training (no trainer, optimizers, neptune or kaggle), so it runs in an offline
Kaggle notebook; with exported models (ONNX, OpenVINO) it does not import torch either (~3 s and ~500 MB less).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.special import expit, softmax

from dataloader.audio import audio_files
from dataloader.features import frontend_of_checkpoint
from dataloader.standardize import Standardizer
from inference.backends import Runner, load_metadata, make_runner
from inference.clock_guard import ClockGuard, WorkClock
from inference.file_pipeline import file_chunks, stream_files
from inference.postprocess import RowPostprocess, RowWindows, smooth_windows
from inference.priors import SiteHourPriors
from inference.submission import n_windows, row_ids, to_submission_frame
from inference.teacher_member import is_teacher, teacher_member
from inference.windows import InputGroup
from utils.checkpoints import ModelMeta

log = logging.getLogger(__name__)
BATCH_SIZE = 32  # windows per model call: at 64, OpenVINO and ONNX Runtime ran 5-40 % slower on this CPU
BLENDS = ("mean", "rank")


def rank_blend(stacked: np.ndarray, members: int, weights: Sequence[float]) -> np.ndarray:
    """Per-class rank blending: ``stacked`` ``(rows, members x classes)`` probabilities of every row of a folder
    (NaN where a member does not predict a class) -> ``(rows, classes)``: each member's rank of each row within the
    class, scaled to [0, 1], averaged over the members predicting the class with ``weights`` (a class no member
    predicts: 0). Ranks ignore each member's calibration, which differs between models."""
    from scipy.stats import rankdata  # noqa: PLC0415

    rows = len(stacked)
    x = stacked.reshape(rows, members, -1)
    ranks = (rankdata(x, axis=0) - 1) / max(1, rows - 1)
    known = ~np.isnan(x)
    w = np.asarray(weights, dtype=np.float64)[None, :, None] * known
    out = np.where(known, ranks, 0.0) * w
    return (out.sum(axis=1) / np.where(w.sum(axis=1) > 0, w.sum(axis=1), 1)).astype(np.float32)


@dataclass
class EnsembleMember:
    """One model of an ensemble: where it came from, what it is, how it runs, and where its outputs go."""

    source: str  # the checkpoint / export path, or ``teacher:<model>``
    meta: ModelMeta
    run: Runner
    columns: np.ndarray  # the ensemble label index of each of its outputs
    conversion: Optional[tuple[np.ndarray, np.ndarray]]  # its own statistics from its group's (None: the same)
    group: int  # its input group

    @property
    def activation(self) -> str:
        """The output activation its loss was trained for (sigmoid or softmax)."""
        return self.meta.activation


class SoundscapePredictor:
    """An ensemble of models (checkpoints ``.pt``, or exports ``.onnx``/``.xml``), CNNs on mels, Wav2Vec2 models
    on waveforms and heads on embeddings alike: each file is decoded once, each front end's windows are cut once
    for the members that share it (:class:`inference.windows.InputGroup`); ``predict_file`` gives per-window
    probabilities, optionally smoothed over ±``smooth`` neighbouring windows."""

    def __init__(self, checkpoints: Sequence[str | Path], device: str = "cpu", batch_size: int = BATCH_SIZE,
                 backend: str = "auto", threads: int = 0, smooth: int = 0, row_s: Optional[float] = None,
                 precision: str = "f32", classes: Sequence[str] = (), data_dir: str | Path = "",
                 row_windows: RowWindows = RowWindows(), peak_power: float = 0.0, blend: str = "mean",
                 weights: Sequence[float] = (), openvino_mode: str = "throughput"):
        """``precision``: OpenVINO's inference precision (f32, or bf16 where the CPU has it). ``row_s``: the length
        of a row (default: the shortest member input; ``predict.py`` passes the competition's 5 s). Models trained
        on longer inputs (e.g. 10 s) see a context window centred on each row. A ``teacher:<embedding model>`` member
        predicts the competition's ``classes`` it maps onto (the taxonomy of ``data_dir``). ``row_windows``: the
        windows each row is the mean of (shift TTA, a row hop; default: the row's own), ``smooth`` and
        ``peak_power`` the per-file tricks after it (:mod:`inference.postprocess`). ``blend``: ``mean`` of the
        members' probabilities, or ``rank`` (per class, each member's rank over every row of the folder, then the
        mean), either weighted by ``weights`` (one per member, default equal)."""
        if blend not in BLENDS:
            raise ValueError(f"blend {blend!r}: allowed: {', '.join(BLENDS)}")
        teachers = {str(p): teacher_member(p, classes, data_dir) for p in checkpoints if is_teacher(p)}
        metas = [teachers[str(p)][0] if str(p) in teachers else load_metadata(p) for p in checkpoints]
        if not metas:
            raise ValueError("at least one checkpoint is needed")
        self.window_s = float(row_s or min(meta.window_s for meta in metas))  # one row: never a member's order
        self.groups: list[InputGroup] = []
        keys: dict[str, int] = {}
        self.labels: list[str] = []
        for meta in metas:
            self.labels.extend(label for label in meta.labels if label not in self.labels)
        self.models: list[EnsembleMember] = []
        for path, meta in zip(checkpoints, metas):
            if meta.window_s < self.window_s:
                raise ValueError(f"{path} takes {meta.window_s}-s inputs, shorter than a {self.window_s}-s row")
            key = meta.frontend_key()
            if key not in keys:
                frontend = frontend_of_checkpoint(meta)
                keys[key] = len(self.groups)
                self.groups.append(InputGroup(frontend, Standardizer.from_dict(meta.standardizer), meta.pad_mode,
                                              frontend.frames_for(self.window_s), frontend.frames_for(meta.window_s)))
            group = self.groups[keys[key]]
            # each model fitted its own statistics on its own training split (another fold: other values); the
            # windows are standardised once with the group's first model's, and mapped onto each other's own
            own = Standardizer.from_dict(meta.standardizer)
            runner = teachers[str(path)][1] if str(path) in teachers else make_runner(path, backend, device, threads,
                                                                                         precision, openvino_mode)
            self.models.append(EnsembleMember(str(path), meta, runner,
                                              np.array([self.labels.index(lbl) for lbl in meta.labels]),
                                              own.conversion_from(group.standardizer), keys[key]))
        self.clock = WorkClock()  # seconds of work per front end and per member (what the clock guard decides by)
        for group in self.groups:  # a missing embedding model or runtime is said here, in one line, not in a thread
            group.frontend.prepare()
        first = self.groups[0]
        self.frontend, self.standardizer = first.frontend, first.standardizer
        self.sample_rate = first.frontend.sample_rate
        self.batch_size, self.smooth, self.row_windows = batch_size, smooth, row_windows
        self.post = RowPostprocess(smooth, peak_power)
        self.blend = blend
        self.weights = [float(w) for w in weights] or [1.0] * len(self.models)
        if len(self.weights) != len(self.models) or min(self.weights) < 0 or not sum(self.weights) > 0:
            raise ValueError(f"weights {list(weights)}: one non-negative weight per member ({len(self.models)}), "
                             f"not all zero")
        self.input_s = max(meta.window_s for meta in metas)

    def file_windows(self, path: str | Path, max_windows: Optional[int] = None) -> list[np.ndarray]:
        """The windows of every input group for a soundscape (the first ``max_windows`` when given, decoding only
        what they need; the last partial window padded): the file pipeline's windows, joined."""
        _, chunks = file_chunks(self, Path(path), max_windows=max_windows)
        parts = [windows for _, windows in chunks]
        return [np.concatenate([p[g] for p in parts]) for g in range(len(self.groups))]

    def windows(self, path: str | Path, max_windows: Optional[int] = None) -> np.ndarray:
        """(n_windows, 1, rows, frames) float32 model inputs of a single-front-end ensemble (calibration, export)."""
        if len(self.groups) > 1:
            raise ValueError(f"the ensemble has {len(self.groups)} front ends; use file_windows()")
        return self.file_windows(path, max_windows)[0]

    def probabilities(self, windows: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Weighted mean probability over the ensemble (each model's own activation: sigmoid, or softmax for a
        model trained with softmax cross-entropy; each model's own standardisation statistics), (n_windows,
        len(self.labels)); ``windows``: one array per input group, or one array for a single-front-end ensemble.
        A class is averaged over the members that predict it. With ``blend = rank`` the members' own
        probabilities side by side instead, ``(n_windows, members x labels)``, NaN where a member does not predict
        a class (:func:`rank_blend` joins them once every file is scored)."""
        per_group = [windows] if isinstance(windows, np.ndarray) else list(windows)
        n = len(per_group[0])
        stacked = np.full((n, len(self.models), len(self.labels)), np.nan, dtype=np.float32)
        total = np.zeros((n, len(self.labels)), dtype=np.float32)
        counts = np.zeros(len(self.labels), dtype=np.float32)
        for k, member in enumerate(self.models):
            t0 = time.perf_counter()
            inputs = per_group[member.group]
            for i in range(0, n, self.batch_size):
                batch = inputs[i:i + self.batch_size]
                if member.conversion is not None:  # this model's own standardisation statistics
                    scale, shift = member.conversion
                    batch = batch * scale[:, None] + shift[:, None]
                logits = np.asarray(member.run(batch), dtype=np.float32)
                probs = softmax(logits, axis=1) if member.activation == "softmax" else expit(logits)
                total[i:i + len(logits), member.columns] += self.weights[k] * probs
                stacked[i:i + len(logits), k, member.columns] = probs
            counts[member.columns] += self.weights[k]
            self.clock.add_member(k, time.perf_counter() - t0)
        if self.blend == "rank":
            return stacked.reshape(n, -1)
        return total / np.where(counts > 0, counts, 1)

    def member_groups(self) -> list[int]:
        """The input group of each member, in order."""
        return [member.group for member in self.models]

    def keep_members(self, count: int) -> None:
        """Keep the first ``count`` members and only the input groups (front ends) they use; labels stay, so a
        class no kept member predicts gets 0.0."""
        self.models, self.weights = self.models[:count], self.weights[:count]
        used = sorted({member.group for member in self.models})
        self.groups = [self.groups[g] for g in used]
        for member in self.models:
            member.group = used.index(member.group)
        self.input_s = max(member.meta.window_s for member in self.models)
        self.clock = WorkClock()

    def predict_windows(self, windows: np.ndarray | Sequence[np.ndarray], segments: Sequence[int] = ()
                        ) -> np.ndarray:
        """:meth:`probabilities`, smoothed over ±``smooth`` windows within each file: ``segments`` are the window
        counts of the files ``windows`` joins, in order (default: one file)."""
        probs = self.probabilities(windows)
        if not self.smooth:
            return probs
        bounds = np.cumsum([0, *(segments or [len(probs)])])
        return np.concatenate([smooth_windows(probs[a:b], self.smooth) for a, b in zip(bounds[:-1], bounds[1:])])

    def predict_file(self, path: str | Path) -> tuple[list[str], np.ndarray]:
        """Row ids and probabilities for every window of ``path``."""
        probs = self.predict_windows(self.file_windows(path))
        return row_ids(Path(path).stem, len(probs), self.window_s), probs


def fill_rows(path: Path, row_s: float, labels: Sequence[str], columns: Sequence[str], fill_value: float,
              unreadable_s: float) -> pd.DataFrame:
    """Rows of ``fill_value`` for a file that could not be predicted: as many as its header's duration gives, or,
    when the header is unreadable too, as many as a test file of the competition has (``unreadable_s``)."""
    try:
        count = n_windows(sf.info(str(path)).duration, row_s)
    except Exception:  # noqa: BLE001 - any header failure: the competition's file length
        count = n_windows(unreadable_s, row_s)
    return to_submission_frame(row_ids(path.stem, count, row_s),
                               np.full((count, len(labels)), fill_value, dtype=np.float32), labels, columns)


def predict_folder(predictor: SoundscapePredictor, audio_dir: str | Path, columns: Sequence[str],
                   fill_value: float = 0.0, limit: Optional[int] = None, decode_threads: int = 1,
                   budget_s: Optional[float] = None, unreadable_s: float = 60.0,
                   priors: Optional[SiteHourPriors] = None, files: Optional[Sequence[Path]] = None) -> pd.DataFrame:
    """Submission frame for the audio files of ``audio_dir`` (OGG, WAV, FLAC, MP3, any case; sorted; the first
    ``limit`` when given), read through the batched file pipeline (:func:`inference.file_pipeline.stream_files`:
    ``decode_threads`` threads decode ahead while the models work, consecutive files share model calls; smoothing
    stays within each file). A file that cannot be read gets rows of ``fill_value`` and a warning instead of
    stopping the submission (``unreadable_s``: the competition's file length, for a file whose header cannot be
    read either). With ``budget_s`` a :class:`ClockGuard` keeps the whole folder within that many seconds;
    ``priors`` (:class:`inference.priors.SiteHourPriors`) scale each file's rows by its site and hour. ``files``:
    these recordings instead of ``audio_dir``'s."""
    files = [Path(f) for f in files] if files is not None else audio_files(audio_dir)[:limit]
    frames: list[Optional[pd.DataFrame]] = [None] * len(files)
    ranked: dict[int, np.ndarray] = {}  # blend = rank: each file's members' probabilities, blended at the end
    guard = ClockGuard(budget_s, len(files)) if budget_s else None

    def frame(k: int, probs: np.ndarray) -> pd.DataFrame:
        if priors is not None:
            probs = priors.apply(files[k].name, probs, predictor.labels)
        return to_submission_frame(row_ids(files[k].stem, len(probs), predictor.window_s), probs, predictor.labels,
                                   columns)

    def fill(k: int) -> pd.DataFrame:
        return fill_rows(files[k], predictor.window_s, predictor.labels, columns, fill_value, unreadable_s)

    def score(first: int, last: int) -> None:
        for rows in stream_files(predictor, files[first:last], decode_threads=decode_threads,
                                 progress="predict soundscapes"):
            k = first + rows.index
            if rows.probs is None:
                log.warning("%s: %s -- its rows get %s", rows.path.name, rows.error, fill_value)
                frames[k] = fill(k)
            elif predictor.blend == "rank":
                ranked[k] = predictor.post(rows.probs)  # each member's columns smoothed / scaled on their own
            else:
                frames[k] = frame(k, predictor.post(rows.probs))
            if guard is not None and guard.spent():  # rows of fill_value: a late submission scores nothing at all
                left = [j for j in range(len(files)) if frames[j] is None and j not in ranked]
                if left:
                    log.warning("clock guard: the %.0f s budget is spent; %s and the %d files after it get %s",
                                guard.budget_s, files[left[0]].name, len(left) - 1, fill_value)
                for j in left:
                    frames[j] = fill(j)
                return

    if guard is None or len(files) <= guard.probe_files:
        score(0, len(files))
    else:
        probe, t0 = guard.probe_files, time.perf_counter()
        predictor.clock = WorkClock()
        score(0, probe)
        if guard.decide(predictor, time.perf_counter() - t0, probe):
            score(0, probe)  # the probe files again, by the ensemble every other file gets
        if not guard.spent():
            score(probe, len(files))
    if ranked:
        order = sorted(ranked)
        blended = rank_blend(np.concatenate([ranked[k] for k in order]), len(predictor.models), predictor.weights)
        bounds = np.cumsum([0, *(len(ranked[k]) for k in order)])
        for k, a, b in zip(order, bounds[:-1], bounds[1:]):
            frames[k] = frame(k, blended[a:b])
    if not files:
        return pd.DataFrame(columns=["row_id", *columns])
    return pd.concat(frames, ignore_index=True)
