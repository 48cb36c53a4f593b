"""Perch v2 as people get it: the TensorFlow SavedModel Kaggle Models publishes, the TFLite and ONNX conversions
users share, each run by its own runtime behind one :class:`~dataloader.embedders.Embedder`.

- **SavedModel** (``google/bird-vocalization-classifier/tensorFlow2/perch_v2_cpu``: ``saved_model.pb``,
  ``variables/``, ``assets/labels.csv``): run with TensorFlow where it is installed (Kaggle's notebook image has
  it); its ``serving_default`` signature takes 5 s at 32 kHz (``inputs``, ``(batch, 160000)``) and returns
  ``embedding`` (1,536-d), ``label`` (logits over 14,795 classes, named by scientific name in ``labels.csv``) and
  more (``spatial_embedding``, ``spectrogram``) that are not read.
- **TFLite** (``perch_v2.tflite``): run with ``ai-edge-litert``, as BirdNET; one interpreter per thread.
- **ONNX** (``perch_v2.onnx``): run with ONNX Runtime.

Outputs are found by name (``embedding``, ``label``), else by shape (the logits have one column per label, the
embedding is the other 2-D output). Labels: ``assets/labels.csv`` of a SavedModel, else ``labels.csv`` (or
``<model>.labels.csv``) beside the file, else ``labels`` of a JSON beside it; the first column, its header row
(``inat2024_fsd50k``) dropped. ``python -m inference.convert_perch`` converts a SavedModel to TFLite or ONNX, with
its labels beside the result.
"""
from __future__ import annotations

import abc
import csv
import json
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dataloader.embedder_base import EMBEDDERS, Embedder, EmbedderError, find_model_file, onnx_session, where_looked

log = logging.getLogger(__name__)
PERCH_RATE, PERCH_WINDOW_S = 32000, 5.0
PERCH_FILES = ("saved_model.pb", "perch_v2.tflite", "perch_v2.onnx")  # looked for among the attached inputs
LABEL_HEADERS = {"inat2024_fsd50k", "label", "labels", "scientific_name", "ebird2021"}


def model_root(path: Path) -> Path:
    """A SavedModel's folder when ``path`` is the folder or its ``saved_model.pb``, else ``path``."""
    return path.parent if path.name == "saved_model.pb" else path


def read_labels(model: Path) -> list[str]:
    """The class names of a Perch model file or SavedModel folder (see the module docstring); [] when none."""
    root = model_root(model)
    candidates = [root / "assets" / "labels.csv"] if root.is_dir() else [
        root.with_name(root.stem + ".labels.csv"), root.with_name("labels.csv")]
    for path in candidates:
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                rows = [r[0].strip() for r in csv.reader(f) if r and r[0].strip()]
            return rows[1:] if rows and rows[0].lower() in LABEL_HEADERS else rows
    side = root.with_suffix(".json")
    if root.is_file() and side.is_file():
        return list(json.loads(side.read_text()).get("labels", []))
    return []


def model_format(path: Path) -> str:
    """``savedmodel``, ``tflite`` or ``onnx`` from the path; a clear error for anything else."""
    root = model_root(path)
    if root.is_dir():
        if not (root / "saved_model.pb").is_file():
            raise EmbedderError(f"Perch: {root} is a folder without saved_model.pb (not a TensorFlow SavedModel)")
        return "savedmodel"
    suffix = root.suffix.lower()
    if suffix in (".tflite", ".onnx"):
        return suffix[1:]
    raise EmbedderError(f"Perch: {root.name}: expected a SavedModel folder, a .tflite or an .onnx file")


def model_identity(path: Path) -> str:
    """The model's name and size in bytes (a SavedModel: its folder's name and its files' total)."""
    root = model_root(path)
    if root.is_dir():
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        return f"{root.name}/saved_model:{size}"
    return f"{root.name}:{root.stat().st_size}"


def pick_outputs(names: Sequence[str], shapes: Sequence[Sequence[int]], n_labels: int) -> tuple[int, Optional[int]]:
    """(index of the embedding output, index of the logits output or None) by name, else by shape."""
    lowered = [n.lower() for n in names]
    emb = next((i for i, n in enumerate(lowered) if n.endswith("embedding") and "spatial" not in n), None)
    lab = next((i for i, n in enumerate(lowered) if n.endswith("label") or n.endswith("labels")), None)
    two_d = [i for i, s in enumerate(shapes) if len(s) == 2]
    if lab is None and n_labels:
        lab = next((i for i in two_d if int(shapes[i][-1]) == n_labels), None)
    if emb is None:
        emb = next((i for i in two_d if i != lab), None)
    if emb is None:
        raise EmbedderError(f"Perch: no embedding output among {list(names)} (shapes {[list(s) for s in shapes]})")
    return emb, lab


class PerchRunner(abc.ABC):
    """One runtime's way of running a Perch model: (n, 160000) float32 -> (embeddings, logits or None)."""

    @abc.abstractmethod
    def run(self, windows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Embeddings and logits of a batch of 5-s windows."""


class SavedModelRunner(PerchRunner):
    """The SavedModel's ``serving_default`` signature, run by TensorFlow."""

    def __init__(self, root: Path, n_labels: int, threads: int = 0):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow as tf  # noqa: PLC0415
        except ImportError:
            raise EmbedderError("Perch's SavedModel needs TensorFlow, which this Python lacks (Kaggle's notebook "
                                "image has it; elsewhere pip install tensorflow-cpu), or convert it once where "
                                "TensorFlow is: python -m inference.convert_perch --to tflite") from None
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow already ran in this process: its thread pools are fixed
                log.debug("TensorFlow's threads were already set in this process; %d not applied", threads)
        self.tf = tf
        self.model = tf.saved_model.load(str(root))
        if "serving_default" not in self.model.signatures:
            raise EmbedderError(f"Perch: {root} has no serving_default signature (signatures: "
                                f"{list(self.model.signatures)})")
        self.signature = self.model.signatures["serving_default"]
        _, kwargs = self.signature.structured_input_signature
        if len(kwargs) != 1:
            raise EmbedderError(f"Perch: {root}'s serving_default takes {sorted(kwargs)}; expected one audio input")
        self.input_name = next(iter(kwargs))
        outputs = self.signature.structured_outputs
        names = sorted(outputs)
        self.embedding, logits = (names[i] if i is not None else None
                                  for i in pick_outputs(names, [outputs[n].shape.as_list() for n in names], n_labels))
        self.logits = logits

    def run(self, windows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        out = self.signature(**{self.input_name: self.tf.constant(windows, dtype=self.tf.float32)})
        logits = np.asarray(out[self.logits], np.float32) if self.logits else None
        return np.asarray(out[self.embedding], np.float32), logits


class TFLiteRunner(PerchRunner):
    """A ``.tflite`` conversion, run by ``ai-edge-litert``: through its ``serving_default`` signature when it has
    one (a conversion of the SavedModel keeps the output names), else by its output tensors."""

    def __init__(self, path: Path, n_labels: int, threads: int = 0):
        try:
            from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
        except ImportError:
            raise EmbedderError("Perch's TFLite file needs ai-edge-litert, which this Python lacks: ship its wheel "
                                "in the model dataset, or install it where there is a network") from None
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads or (os.cpu_count() or 1))
        signatures = self.interpreter.get_signature_list()
        self.signature = None
        if "serving_default" in signatures:
            self.signature = self.interpreter.get_signature_runner("serving_default")
            names = list(signatures["serving_default"]["outputs"])
            shapes = [list(self.signature.get_output_details()[n]["shape"]) for n in names]
            self.input_name = signatures["serving_default"]["inputs"][0]
        else:
            details = self.interpreter.get_output_details()
            names, shapes = [d["index"] for d in details], [list(d["shape"]) for d in details]
            self.input = self.interpreter.get_input_details()[0]["index"]
        emb, lab = pick_outputs([str(n) for n in names], shapes, n_labels)
        self.embedding, self.logits = names[emb], (names[lab] if lab is not None else None)
        self.batch = -1

    def run(self, windows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        if self.signature is not None:  # resizes its input to the batch itself
            out = self.signature(**{self.input_name: windows})
            get = out.__getitem__
        else:
            if len(windows) != self.batch:
                self.interpreter.resize_tensor_input(self.input, list(windows.shape))
                self.interpreter.allocate_tensors()
                self.batch = len(windows)
            self.interpreter.set_tensor(self.input, windows)
            self.interpreter.invoke()
            get = self.interpreter.get_tensor
        logits = np.asarray(get(self.logits), np.float32) if self.logits is not None else None
        return np.array(get(self.embedding), np.float32), logits


class OnnxRunner(PerchRunner):
    """An ``.onnx`` conversion, run by ONNX Runtime."""

    def __init__(self, path: Path, n_labels: int, threads: int = 0):
        self.session = onnx_session(path, threads, "Perch's ONNX files")
        self.input_name = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()
        shapes = [[d if isinstance(d, int) else -1 for d in o.shape] for o in outputs]
        emb, lab = pick_outputs([o.name for o in outputs], shapes, n_labels)
        self.outputs = [outputs[emb].name] + ([outputs[lab].name] if lab is not None else [])

    def run(self, windows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        out = self.session.run(self.outputs, {self.input_name: windows})
        return np.asarray(out[0], np.float32), (np.asarray(out[1], np.float32) if len(out) > 1 else None)


RUNNERS: dict[str, type[PerchRunner]] = {"savedmodel": SavedModelRunner, "tflite": TFLiteRunner, "onnx": OnnxRunner}


def open_runner(path: Path, n_labels: int, threads: int = 0) -> PerchRunner:
    """The runner of the model at ``path`` for its format."""
    fmt = model_format(path)
    return RUNNERS[fmt](model_root(path), n_labels, threads)


def perch_path(model_path: str) -> Path:
    """The Perch model to load: ``model_path`` (a SavedModel folder or its ``saved_model.pb``, a ``.tflite``, an
    ``.onnx``), else the first of :data:`PERCH_FILES` in ``BIRDCLEF_EMBEDDERS`` / ``embedders/`` / the attached
    inputs (a Kaggle notebook with the Perch model attached needs no path)."""
    if model_path and Path(model_path).expanduser().is_dir():
        return Path(model_path).expanduser()
    found = find_model_file(model_path, "") if model_path else None
    if found is None and not model_path:
        found = next((f for f in (find_model_file("", n) for n in PERCH_FILES) if f is not None), None)
    if found is None:
        raise EmbedderError(f"Perch: {Path(model_path).name if model_path else 'no model'} found (looked in "
                            f"{where_looked(model_path)}): attach Perch v2 (Kaggle Models' SavedModel "
                            f"google/bird-vocalization-classifier perch_v2_cpu, or a perch_v2.tflite / .onnx "
                            f"conversion) and set [model] pretrained_path (or perch:<path>) to it")
    return model_root(found)


@EMBEDDERS.register("perch")
class Perch(Embedder):
    """Perch v2 (32 kHz, 5-s windows) from its SavedModel, a TFLite or an ONNX file (see the module docstring)."""

    name, sample_rate, window_s = "perch", PERCH_RATE, PERCH_WINDOW_S

    def __init__(self, model_path: str = "", threads: int = 0):
        path = perch_path(model_path)
        self.labels = read_labels(path)
        self.runner = open_runner(path, len(self.labels), threads)
        embedding, _ = self.runner.run(np.zeros((1, self.window_samples), np.float32))
        self.dim = int(embedding.shape[-1])
        self.format = model_format(path)
        self._identity = model_identity(path)

    def embed(self, windows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        return self.runner.run(np.ascontiguousarray(windows, dtype=np.float32))
