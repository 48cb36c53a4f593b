"""Checkpoints as plain data: state dicts, config, labels, normalisation stats; ``weights_only=True`` loads them.

A failed write leaves no temporary file behind (and the stale temporaries of killed writers are removed before the
next write); a file that cannot be used raises :class:`CheckpointError` with one line naming it and what is wrong.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import pickle
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from utils.atomic_files import atomic_path, remove_stale_temporaries


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or used; the message is one line naming the file."""


def _free_gb(folder: Path) -> float:
    try:
        return shutil.disk_usage(folder).free / 1e9
    except OSError:
        return float("nan")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically (temporary file, then rename). A failed write removes its temporary file; a
    full disk is said as such, naming the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    try:
        import torch  # noqa: PLC0415 - imported when used: exported models' inference runs without torch

        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except BaseException as exc:
        # torch reports a short write from its zip writer as a RuntimeError, not as ENOSPC
        full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
            isinstance(exc, RuntimeError) and ("inline_container" in str(exc) or "file write failed" in str(exc)))
        if full:
            raise CheckpointError(f"writing {path} failed ({_free_gb(path.parent):.2f} GB free on its disk: no space "
                                  f"left on device?): free space or set [paths] runs_dir elsewhere; "
                                  f"the last complete checkpoint is kept") from None
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no pickled classes) onto the CPU; a missing, damaged or
    refused file raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        import torch  # noqa: PLC0415

        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused: it holds pickled Python objects, not a plain-data checkpoint of this "
                              f"project (loading it would run code; use a checkpoint this pipeline wrote)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: damaged or truncated ({first})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this pipeline (a {type(payload).__name__}, not a dict)")
    return payload


# ---- what a trained model is, for inference: the typed contract of a checkpoint's (and an export's) metadata ----
META_FORMAT = 2  # 1: checkpoints written before issue 23 (no "format" key); 2: the fields of ModelMeta, "format" set


@dataclass(frozen=True)
class ModelMeta:
    """What inference needs to know about a trained model, stored as plain top-level keys of its checkpoint (and as
    the JSON beside an export). :meth:`from_payload` is the one place where checkpoints of older formats get the
    defaults of fields they lack."""

    labels: tuple[str, ...]  # the model's outputs, in order (``class@bin`` for an events model)
    model_name: str
    data_process: dict[str, Any]  # the front end's settings (a [data_process] section, or a waveform/embedding one)
    window_s: float  # the input length the model was trained on
    standardizer: dict[str, Any]  # normalisation statistics fitted on the run's training split
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    input: str = "mel"  # the front end's input kind: mel | waveform | embedding
    pad_mode: str = "repeat"  # how a window past a recording's end is filled
    activation: str = "sigmoid"  # sigmoid | softmax (the loss's)
    task: str = "multilabel"  # a registered task (utils.tasks)
    classes: tuple[str, ...] = ()  # the task's classes (the labels without event bins)
    format: int = META_FORMAT

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "ModelMeta":
        """The metadata of a checkpoint payload or an export's JSON, of any format: fields written before they
        existed get their old behaviour (mel input, repeat padding, sigmoid, multi-label, classes = labels)."""
        missing = [k for k in ("labels", "model_name", "data_process", "window_s", "standardizer") if k not in payload]
        if missing:
            raise CheckpointError(f"not a model of this pipeline: its metadata lacks {', '.join(missing)}")
        version = int(payload.get("format", 1))
        if version > META_FORMAT:
            raise CheckpointError(f"written by a newer version of this pipeline (format {version}; this one reads up "
                                  f"to {META_FORMAT}): update the code")
        labels = tuple(str(x) for x in payload["labels"])
        standardizer = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in payload["standardizer"].items()}
        return cls(labels=labels, model_name=str(payload["model_name"]), data_process=dict(payload["data_process"]),
                   window_s=float(payload["window_s"]), standardizer=standardizer,
                   model_kwargs=dict(payload.get("model_kwargs") or {}), input=str(payload.get("input", "mel")),
                   pad_mode=str(payload.get("pad_mode", "repeat")),
                   activation=str(payload.get("activation", "sigmoid")),
                   task=str(payload.get("task", "multilabel")),
                   classes=tuple(str(x) for x in payload.get("classes") or labels), format=version)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) for a checkpoint or a JSON file, in the current format."""
        out = dataclasses.asdict(self)
        out.update(labels=list(self.labels), classes=list(self.classes), format=META_FORMAT)
        return out

    def frontend_key(self) -> str:
        """What decides the windows a model sees (front-end settings, input kind, input length, padding): models
        with the same key share one front end's windows in an ensemble."""
        return json.dumps([self.data_process, self.input, self.window_s, self.pad_mode], sort_keys=True, default=str)


def load_model_meta(path: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` of a checkpoint file."""
    try:
        return ModelMeta.from_payload(load_checkpoint(path))
    except CheckpointError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise CheckpointError(f"{path}: {exc}") from None
