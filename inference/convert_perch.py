"""Convert Perch v2's TensorFlow SavedModel (as Kaggle Models publishes it) to TFLite or ONNX for CPU inference.

    python -m inference.convert_perch --saved-model perch_v2_cpu/1 --to tflite --out perch_v2.tflite \
        [--quantize none|fp16|dynamic-int8] [--check 4]

Needs TensorFlow (``tensorflow-cpu``; ``--to onnx`` also ``tf2onnx``), once, where they are installed: the result
runs with ``ai-edge-litert`` (TFLite) or ONNX Runtime, neither of which needs TensorFlow, so it can be attached to
a Kaggle notebook beside BirdNET. The SavedModel's ``assets/labels.csv`` is copied beside the result
(``<out stem>.labels.csv``), which is where the ``perch`` embedding model reads a conversion's labels. ``--check N``
runs the SavedModel and the conversion on the same N random 5-s windows and reports the largest differences of
their embeddings and logits, and the windows per second of each (one JSON line).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader.perch import (PERCH_RATE, PERCH_WINDOW_S, model_format, model_root, open_runner,  # noqa: E402
                             read_labels)


def to_tflite(saved_model: Path, out: Path, quantize: str = "none") -> Path:
    """The SavedModel's ``serving_default`` as a TFLite flatbuffer (built-in ops only: what ``ai-edge-litert``
    runs without the Flex delegate)."""
    import tensorflow as tf  # noqa: PLC0415

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize in ("fp16", "dynamic-int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    out.write_bytes(converter.convert())
    return out


def to_onnx(saved_model: Path, out: Path, quantize: str = "none") -> Path:
    """The SavedModel as ONNX, by ``tf2onnx`` (run as its own command: its messages are its own)."""
    if quantize != "none":
        raise SystemExit("convert_perch: --quantize applies to --to tflite; quantize an ONNX file with "
                         "python -m inference.export's tools instead")
    try:
        import tf2onnx  # noqa: F401,PLC0415
    except ImportError:
        raise SystemExit("convert_perch: --to onnx needs tf2onnx (pip install tf2onnx) beside TensorFlow") from None
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved_model), "--signature_def",
                    "serving_default", "--output", str(out), "--opset", "17"], check=True)
    return out


CONVERTERS: dict[str, Callable[[Path, Path, str], Path]] = {"tflite": to_tflite, "onnx": to_onnx}


def copy_labels(saved_model: Path, out: Path) -> int:
    """``assets/labels.csv`` beside the conversion as ``<stem>.labels.csv``; the number of labels (0: none)."""
    source = saved_model / "assets" / "labels.csv"
    if not source.is_file():
        return 0
    shutil.copyfile(source, out.with_name(out.stem + ".labels.csv"))
    return len(read_labels(out))


def compare(saved_model: Path, converted: Path, n: int, seed: int = 0) -> dict:
    """Largest |difference| of embeddings and logits on ``n`` random windows, and each model's windows per second."""
    windows = (np.random.default_rng(seed).standard_normal((n, int(PERCH_RATE * PERCH_WINDOW_S))) * 0.1
               ).astype(np.float32)
    labels = len(read_labels(saved_model))
    result: dict = {}
    outputs = []
    for name, path in (("saved_model", saved_model), (model_format(converted), converted)):
        runner = open_runner(path, labels)
        runner.run(windows[:1])  # warm-up
        t0 = time.perf_counter()
        outputs.append(runner.run(windows))
        result[f"{name}_windows_per_s"] = round(n / (time.perf_counter() - t0), 2)
    (emb_a, log_a), (emb_b, log_b) = outputs
    result["max_abs_diff_embedding"] = float(np.abs(emb_a - emb_b).max())
    if log_a is not None and log_b is not None:
        result["max_abs_diff_logits"] = float(np.abs(log_a - log_b).max())
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--saved-model", required=True, help="the SavedModel folder (saved_model.pb, variables/, assets/)")
    p.add_argument("--to", choices=sorted(CONVERTERS), default="tflite")
    p.add_argument("--out", required=True)
    p.add_argument("--quantize", choices=["none", "fp16", "dynamic-int8"], default="none")
    p.add_argument("--check", type=int, default=0, metavar="N", help="compare on N random windows (0: skip)")
    args = p.parse_args(argv)
    saved_model = model_root(Path(args.saved_model))
    if model_format(saved_model) != "savedmodel":
        raise SystemExit(f"convert_perch: {args.saved_model} is not a SavedModel folder")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    CONVERTERS[args.to](saved_model, out, args.quantize)
    report = {"out": str(out), "format": args.to, "quantize": args.quantize, "bytes": out.stat().st_size,
              "labels": copy_labels(saved_model, out), "seconds": round(time.perf_counter() - t0, 1)}
    if args.check:
        report.update(compare(saved_model, out, args.check))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
