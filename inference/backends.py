"""Model runners for inference: PyTorch checkpoints, ONNX Runtime and OpenVINO exports.

A runner maps a float32 batch ``(n, 1, n_mels, frames)`` (or ``(n, 1, 1, samples)`` for waveform models) to
logits ``(n, classes)``. Exported models carry their checkpoint's metadata (labels, front end, statistics,
activation) in a JSON file beside them (``model.onnx`` + ``model.json``), so every backend predicts from the
same information. onnxruntime and openvino are imported only when used.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from utils.atomic_files import atomic_write_text
from utils.checkpoints import ModelMeta, load_model_meta

Runner = Callable[[np.ndarray], np.ndarray]


def metadata_path(model_path: str | Path) -> Path:
    """``model.onnx`` / ``model.xml`` -> ``model.json``."""
    return Path(model_path).with_suffix(".json")


def write_metadata(model_path: str | Path, meta: ModelMeta) -> Path:
    """Write ``meta`` as the JSON beside an exported model (``model.onnx`` -> ``model.json``); returns its path."""
    return atomic_write_text(metadata_path(model_path), json.dumps(meta.to_dict()))


def load_metadata(model_path: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` of a checkpoint (``.pt``) or of an exported model (its ``.json``), of any format."""
    path = Path(model_path)
    if path.suffix in (".onnx", ".xml"):
        side = metadata_path(path)
        if not side.is_file():
            raise FileNotFoundError(f"{path}: its metadata {side.name} is missing (export writes it beside the model)")
        return ModelMeta.from_payload(json.loads(side.read_text()))
    return load_model_meta(path)  # torch, only for checkpoints


def torch_runner(checkpoint: str | Path, device: str = "cpu", channels_last: bool = True) -> Runner:
    """Eager PyTorch on ``device`` (channels_last by default: ~2x faster than contiguous on this CPU)."""
    import torch  # noqa: PLC0415 - only a checkpoint needs it; exported models run without torch

    from factory.families import model_from_checkpoint  # noqa: PLC0415
    from utils.checkpoints import load_checkpoint  # noqa: PLC0415

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model_from_checkpoint(load_checkpoint(checkpoint)).to(device, memory_format=fmt).eval()
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # a few batch shapes recur: each one's fastest kernels, chosen once

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(device).contiguous(memory_format=fmt)
        return model(x).float().cpu().numpy()
    return run


def onnx_runner(path: str | Path, threads: int = 0) -> Runner:
    """ONNX Runtime on the CPU with all graph optimisations; ``threads`` 0 = its default."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between batches: the thread decoding the next soundscapes needs those cycles
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


OPENVINO_MODES = ("latency", "throughput")


def openvino_runner(path: str | Path, threads: int = 0, precision: str = "f32", mode: str = "latency") -> Runner:
    """OpenVINO on the CPU; ``threads`` 0 = its default; ``precision`` f32 (exact) or bf16 (CPUs with bf16
    instructions run it ~1.3x faster; others fall back to f32).

    ``mode = latency``: one synchronous request uses every core. ``throughput``: the cores are split into streams,
    and each batch is split across OpenVINO's optimal number of requests run asynchronously
    (``AsyncInferQueue``), so every stream works (a single synchronous request would run on one stream only)."""
    import openvino as ov  # noqa: PLC0415

    if precision not in ("f32", "bf16"):
        raise ValueError(f"OpenVINO precision {precision!r}: f32 or bf16")
    if mode not in OPENVINO_MODES:
        raise ValueError(f"OpenVINO mode {mode!r}: {' or '.join(OPENVINO_MODES)}")
    config: dict[str, Any] = {"PERFORMANCE_HINT": mode.upper(), "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    out = compiled.output(0)
    if mode == "latency":
        request = compiled.create_infer_request()
        return lambda batch: np.asarray(request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[out])
    requests = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    queue = ov.AsyncInferQueue(compiled, requests)
    results: dict[int, np.ndarray] = {}
    queue.set_callback(lambda request, k: results.__setitem__(k, np.array(request.get_output_tensor(0).data)))

    def run(batch: np.ndarray) -> np.ndarray:
        parts = [p for p in np.array_split(np.ascontiguousarray(batch, dtype=np.float32), requests) if len(p)]
        results.clear()
        for k, part in enumerate(parts):
            queue.start_async({0: part}, userdata=k)
        queue.wait_all()
        return np.concatenate([results[k] for k in range(len(parts))])
    return run


def make_runner(model_path: str | Path, backend: str = "auto", device: str = "cpu", threads: int = 0,
                precision: str = "f32", openvino_mode: str = "latency") -> Runner:
    """The runner for ``model_path``: ``.pt`` -> torch, ``.onnx`` -> ONNX Runtime, ``.xml`` -> OpenVINO
    (``backend`` checks that the file matches the one asked for; ``precision`` and ``openvino_mode`` apply to
    OpenVINO)."""
    suffix = Path(model_path).suffix
    kind = {".onnx": "onnx", ".xml": "openvino"}.get(suffix, "torch")
    if backend not in ("auto", kind):
        raise ValueError(f"{model_path}: a {kind} model, but --backend {backend}; export it first "
                         f"(python export.py --checkpoint CKPT) or pass the matching file")
    if kind == "onnx":
        return onnx_runner(model_path, threads)
    if kind == "openvino":
        return openvino_runner(model_path, threads, precision, openvino_mode)
    return torch_runner(model_path, device)
