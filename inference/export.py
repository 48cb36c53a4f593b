"""Export a checkpoint for fast CPU inference: ONNX (the mel front end stays outside the graph) and an OpenVINO
IR, each checked against PyTorch on the same inputs.

    python -m inference.export --checkpoint runs/<id>/checkpoints/best.pt [--out-dir DIR] [--no-openvino]

Writes ``<name>.onnx`` (+ ``<name>.xml``/``.bin``) and ``<name>.json`` (labels, front end, statistics,
activation: what ``predict.py`` needs), prints one JSON line per format with the max abs difference from
PyTorch, and fails when it exceeds ``--tolerance`` (1e-4).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inference.backends import checkpoint_metadata, metadata_path, onnx_runner, openvino_runner  # noqa: E402
from utils.checkpoints import load_checkpoint  # noqa: E402

TOLERANCE = 1e-4


class ExportMismatch(RuntimeError):
    """An exported model's outputs differ from PyTorch's by more than the tolerance."""


def input_shape(meta: dict[str, Any]) -> tuple[int, int, int]:
    """(channels, height, width) of one window for the checkpoint's input kind."""
    dp, window_s = meta["data_process"], float(meta["window_s"])
    if meta.get("input", "mel") == "waveform":
        return 1, 1, int(round(window_s * dp["sample_rate"]))
    return 1, dp["n_mels"], int(round(window_s * dp["sample_rate"] / dp["hop_length"]))


def export(checkpoint: str | Path, out_dir: str | Path, openvino: bool = True, tolerance: float = TOLERANCE,
           opset: int = 17) -> list[dict[str, Any]]:
    """Export ``checkpoint``; return one report per format (path, max_abs_diff against PyTorch)."""
    from factory.models import model_from_checkpoint  # noqa: PLC0415

    payload = load_checkpoint(checkpoint)
    meta = checkpoint_metadata(payload)
    model = model_from_checkpoint(payload).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = Path(checkpoint).stem if Path(checkpoint).stem not in ("best", "last") else Path(checkpoint).parent.parent.name
    onnx_path = out_dir / f"{name}.onnx"
    shape = input_shape(meta)
    with torch.inference_mode():
        torch.onnx.export(model, torch.randn(2, *shape), str(onnx_path), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=opset, dynamo=False)
    metadata_path(onnx_path).write_text(json.dumps(meta))
    check = np.random.default_rng(0).standard_normal((5, *shape)).astype(np.float32)
    with torch.inference_mode():
        reference = model(torch.from_numpy(check)).float().numpy()
    reports = [_report("onnx", onnx_path, onnx_runner(onnx_path)(check), reference, tolerance)]
    if openvino:
        import openvino as ov  # noqa: PLC0415

        xml = out_dir / f"{name}.xml"
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
        metadata_path(xml).write_text(json.dumps(meta))
        reports.append(_report("openvino", xml, openvino_runner(xml)(check), reference, tolerance))
    return reports


def _report(fmt: str, path: Path, got: np.ndarray, reference: np.ndarray, tolerance: float) -> dict[str, Any]:
    diff = float(np.abs(np.asarray(got) - reference).max())
    report = {"format": fmt, "path": str(path), "max_abs_diff": diff, "tolerance": tolerance,
              "bytes": path.stat().st_size + (path.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)}
    if not diff <= tolerance:
        raise ExportMismatch(f"{path}: outputs differ from PyTorch by {diff:.3g} > {tolerance}")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out-dir", default="exported")
    p.add_argument("--no-openvino", action="store_true")
    p.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = p.parse_args(argv)
    try:
        for report in export(args.checkpoint, args.out_dir, not args.no_openvino, args.tolerance):
            print(json.dumps(report), flush=True)
    except ExportMismatch as exc:
        print(f"export check failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
