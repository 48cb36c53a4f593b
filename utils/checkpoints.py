"""Checkpoints as plain data: state dicts, config, labels, normalisation stats; ``weights_only=True`` loads them.

A failed write leaves no temporary file behind (and the stale temporaries of killed writers are removed before the
next write); a file that cannot be used raises :class:`CheckpointError` with one line naming it and what is wrong.
"""
from __future__ import annotations

import errno
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

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
