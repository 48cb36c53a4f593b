"""Export a checkpoint for fast CPU inference: ONNX (the mel front end stays outside the graph) and an OpenVINO
IR, each checked against PyTorch on the same inputs.

    python -m inference.export --checkpoint runs/<id>/checkpoints/best.pt [--out-dir DIR] [--no-openvino]
                               [--int8 static|dynamic --calibration-dir SOUNDSCAPES
                                [--eval-dir SOUNDSCAPES --ground-truth CSV]]

Writes ``<name>.onnx`` (+ ``<name>.xml``/``.bin``) and ``<name>.json`` (labels, front end, statistics,
activation: what ``predict.py`` needs), prints one JSON line per format with the max abs difference from
PyTorch, and fails when it exceeds ``--tolerance`` (1e-4). ``--int8`` adds an ONNX Runtime int8 model
(``static``: QDQ, per-channel, calibrated on windows of ``--calibration-dir``; ``dynamic``: weights only) and
reports how far its probabilities move on those windows, and with ``--eval-dir`` + ``--ground-truth`` (other
soundscapes and their solution CSV, e.g. the demo's test soundscapes; calibrate on unlabeled ones) the
competition score of fp32 and int8 and their difference.
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
from utils.metrics import competition_score  # noqa: E402

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


def quantize_int8(onnx_path: Path, mode: str, calibration_dir: str | Path, ground_truth: str | None = None,
                  max_windows: int = 256, eval_dir: str | Path | None = None) -> dict[str, Any]:
    """Write ``<name>.int8.onnx`` (+ its ``.json``) and report the change against the fp32 ONNX model."""
    import pandas as pd  # noqa: PLC0415
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,  # noqa: PLC0415
                                          quantize_dynamic, quantize_static)

    from inference.predict import SoundscapePredictor, predict_folder  # noqa: PLC0415

    out = onnx_path.with_name(f"{onnx_path.stem}.int8.onnx")
    fp32 = SoundscapePredictor([onnx_path])
    files = sorted(Path(calibration_dir).glob("*.ogg"))
    if not files:
        raise FileNotFoundError(f"--calibration-dir {calibration_dir}: no .ogg soundscapes")
    windows = np.concatenate([fp32.windows(f) for f in files])[:max_windows]
    if mode == "static":
        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter([{"input": windows[i:i + 16]} for i in range(0, len(windows), 16)])

            def get_next(self) -> dict | None:
                return next(self.batches, None)

        quantize_static(str(onnx_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    else:
        quantize_dynamic(str(onnx_path), str(out), weight_type=QuantType.QInt8)
    metadata_path(out).write_text(metadata_path(onnx_path).read_text())
    int8 = SoundscapePredictor([out])
    report: dict[str, Any] = {"format": f"onnx_int8_{mode}", "path": str(out), "bytes": out.stat().st_size,
                              "fp32_bytes": onnx_path.stat().st_size, "windows": len(windows),
                              "max_prob_diff": float(np.abs(int8.predict_windows(windows)
                                                            - fp32.predict_windows(windows)).max())}
    if ground_truth:
        solution = pd.read_csv(ground_truth)
        columns = list(solution.columns[1:])
        scores = {}
        for name, predictor in (("fp32", fp32), ("int8", int8)):
            frame = predict_folder(predictor, eval_dir or calibration_dir, columns)
            scores[name] = competition_score(solution, frame, "row_id")
        report.update(score_fp32=round(scores["fp32"], 4), score_int8=round(scores["int8"], 4),
                      score_change=round(scores["int8"] - scores["fp32"], 4),
                      scored_on=str(eval_dir or calibration_dir), held_out=eval_dir is not None)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out-dir", default="exported")
    p.add_argument("--no-openvino", action="store_true")
    p.add_argument("--tolerance", type=float, default=TOLERANCE)
    p.add_argument("--int8", choices=("static", "dynamic"))
    p.add_argument("--calibration-dir", help="soundscapes (.ogg) to calibrate and to measure the int8 change on")
    p.add_argument("--eval-dir", help="other soundscapes to score fp32 vs int8 on (default: the calibration ones)")
    p.add_argument("--ground-truth", help="solution CSV of the scored soundscapes: reports the score change")
    args = p.parse_args(argv)
    if args.int8 and not args.calibration_dir:
        p.error("--int8 needs --calibration-dir")
    try:
        reports = export(args.checkpoint, args.out_dir, not args.no_openvino, args.tolerance)
        for report in reports:
            print(json.dumps(report), flush=True)
        if args.int8:
            print(json.dumps(quantize_int8(Path(reports[0]["path"]), args.int8, args.calibration_dir,
                                           args.ground_truth, eval_dir=args.eval_dir)), flush=True)
    except ExportMismatch as exc:
        print(f"export check failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
