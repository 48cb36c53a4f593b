"""What every embedding model shares: the registry, the :class:`Embedder` interface and its error, where model files
are looked for (a path, ``BIRDCLEF_EMBEDDERS`` folders, the code's ``embedders/``, the attached inputs of a Kaggle
notebook), and the ONNX Runtime session maker. The models themselves are in :mod:`dataloader.embedders` (BirdNET,
any ONNX model) and :mod:`dataloader.perch`."""
from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Optional

import numpy as np

from utils.registry import Registry

EMBEDDERS = Registry("embedding model")


class EmbedderError(RuntimeError):
    """An embedding model (its file or its runtime) cannot be had; the message says what to install or attach."""


class Embedder(abc.ABC):
    """Fixed-length audio windows -> (embeddings, logits over the model's own classes or None)."""

    name: str = ""
    sample_rate: int = 0
    window_s: float = 0.0
    dim: int = 0
    labels: list[str] = []

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def identity(self) -> str:
        """What changes the embeddings: the model file's name and size (a cache key part)."""
        return self._identity

    @abc.abstractmethod
    def embed(self, windows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(n, window_samples) float32 -> ((n, dim) float32 embeddings, (n, classes) float32 logits or None)."""

    def logits_from_embeddings(self, embeddings: np.ndarray) -> Optional[np.ndarray]:
        """Logits recomputed from cached embeddings, when the model's class layer is linear over them (else None)."""
        return None


def file_identity(path: Path) -> str:
    """A model file's name and size in bytes (what changes its embeddings: a cache key part)."""
    return f"{path.name}:{path.stat().st_size}"


INPUT_SEARCH_DEPTH = 7  # /kaggle/input/models/<owner>/<model>/<framework>/<variation>/<version>/<file>


def embedder_dirs() -> list[Path]:
    """Where model files are looked for by name when the recorded path does not exist (a Kaggle notebook): the
    folders of ``BIRDCLEF_EMBEDDERS`` (os.pathsep-separated), then ``embedders/`` of the code's own folder (what
    ``inference.package --embedding-model`` fills)."""
    listed = [Path(p) for p in os.environ.get("BIRDCLEF_EMBEDDERS", "").split(os.pathsep) if p]
    return [*listed, Path(__file__).resolve().parents[1] / "embedders"]


def input_root() -> Path:
    """Where a notebook's attached inputs are mounted: ``BIRDCLEF_INPUT_ROOT``, default ``/kaggle/input`` (datasets
    and models alike, in the 2024 and today's layouts)."""
    return Path(os.environ.get("BIRDCLEF_INPUT_ROOT", "/kaggle/input"))


def find_in_inputs(names: tuple[str, ...], root: Optional[Path] = None, depth: int = INPUT_SEARCH_DEPTH
                   ) -> Optional[Path]:
    """The first file called one of ``names`` among the attached inputs under ``root`` (sorted walk, at most
    ``depth`` folders down, links not followed); None when there is none or no such root."""
    root = input_root() if root is None else root
    if not root.is_dir():
        return None
    wanted = set(names)
    for folder, dirs, files in os.walk(root):
        hit = sorted(wanted & set(files))
        if hit:
            return Path(folder) / hit[0]
        level = os.path.relpath(folder, root).count(os.sep) + (folder != str(root))
        dirs[:] = [] if level >= depth else sorted(d for d in dirs if not d.startswith(".") and d not in (
            "train_audio", "train_soundscapes", "test_soundscapes", "unlabeled_soundscapes"))
    return None


def find_model_file(model_path: str, name: str) -> Optional[Path]:
    """``model_path`` when it exists, else a file called ``name`` (or ``model_path``'s name) in
    :func:`embedder_dirs`, else among the attached inputs (:func:`find_in_inputs`); None when none is there."""
    if model_path and Path(model_path).expanduser().is_file():
        return Path(model_path).expanduser()
    names = tuple(dict.fromkeys(n for n in (Path(model_path).name if model_path else "", name) if n))
    for folder in embedder_dirs():
        for candidate in names:
            if (folder / candidate).is_file():
                return folder / candidate
    return find_in_inputs(names) if names else None


def where_looked(model_path: str) -> str:
    """The places :func:`find_model_file` searched, for a one-line error."""
    places = [model_path] if model_path else []
    places += [str(d) for d in embedder_dirs()] + [f"the attached inputs under {input_root()}"]
    return ", ".join(places)

def onnx_session(path: Path, threads: int, what: str):
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op threads (0: the runtime's choice); ``what``
    names the model in the error when onnxruntime is missing."""
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError:
        raise EmbedderError(f"{what} need onnxruntime, which this Python lacks: ship its wheel in the model dataset, "
                            f"or install it where there is a network") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
