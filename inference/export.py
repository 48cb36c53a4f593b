"""Export a checkpoint for fast CPU inference: ONNX (the mel front end stays outside the graph) and an OpenVINO
IR, each checked against PyTorch on the same inputs.

    python -m inference.export --checkpoint runs/<id>/checkpoints/best.pt [--out-dir DIR] [--no-openvino]
                               [--int8 static|dynamic|openvino ... --calibration-dir SOUNDSCAPES
                                [--eval-dir SOUNDSCAPES --ground-truth CSV] [--validation-run RUN_DIR]]

Writes ``<name>.onnx`` (+ ``<name>.xml``/``.bin``) and ``<name>.json`` (labels, front end, statistics, activation:
what ``predict.py`` needs), prints one JSON line per format with the max abs difference from PyTorch, and fails
when it exceeds ``--tolerance`` (1e-4) times the logits' scale. ``--int8`` adds int8 models (ONNX Runtime
``static``: QDQ, per-channel, calibrated on windows of ``--calibration-dir``; ONNX Runtime ``dynamic``: weights
only; ``openvino``: NNCF post-training quantization, calibrated the same way, the fastest on CPUs with VNNI) and
reports how far their probabilities move on those windows, and with ``--eval-dir`` + ``--ground-truth`` (other
soundscapes and their solution CSV, e.g. the demo's test soundscapes; calibrate on unlabeled ones) the competition
score of fp32 and int8 and their difference; and the training run's validation metrics (val_score, val_cmap,
val_padded_cmap) of both on its own validation fold (``--validation-run``, by default the checkpoint's run folder).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader.audio import audio_files  # noqa: E402
from dataloader.features import frontend_of_checkpoint  # noqa: E402
from inference.backends import metadata_path, onnx_runner, openvino_runner, write_metadata  # noqa: E402
from utils.checkpoints import ModelMeta, load_checkpoint  # noqa: E402
from utils.metrics import competition_score, validation_scores  # noqa: E402

if TYPE_CHECKING:
    from inference.predict import SoundscapePredictor

TOLERANCE = 1e-4


class ExportMismatch(RuntimeError):
    """An exported model's outputs differ from PyTorch's by more than the tolerance."""


def input_shape(meta: ModelMeta) -> tuple[int, int, int]:
    """(channels, height, width) of one window of the model's front end."""
    frontend = frontend_of_checkpoint(meta)
    return 1, frontend.rows, frontend.frames_for(meta.window_s)


def export(checkpoint: str | Path, out_dir: str | Path, openvino: bool = True, tolerance: float = TOLERANCE,
           opset: int = 17) -> list[dict[str, Any]]:
    """Export ``checkpoint``; return one report per format (path, max_abs_diff against PyTorch)."""
    from factory.families import model_from_checkpoint  # noqa: PLC0415

    payload = load_checkpoint(checkpoint)
    meta = ModelMeta.from_payload(payload)
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
    write_metadata(onnx_path, meta)
    check = np.random.default_rng(0).standard_normal((5, *shape)).astype(np.float32)
    with torch.inference_mode():
        reference = model(torch.from_numpy(check)).float().numpy()
    reports = [_report("onnx", onnx_path, onnx_runner(onnx_path)(check), reference, tolerance)]
    if openvino:
        import openvino as ov  # noqa: PLC0415

        xml = out_dir / f"{name}.xml"
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
        write_metadata(xml, meta)
        reports.append(_report("openvino", xml, openvino_runner(xml)(check), reference, tolerance))
    return reports


def _report(fmt: str, path: Path, got: np.ndarray, reference: np.ndarray, tolerance: float) -> dict[str, Any]:
    """The exported model's logits against PyTorch's: the largest difference may be ``tolerance`` times the
    logits' scale (their largest magnitude, at least 1), float32 rounding growing with the values it rounds."""
    diff = float(np.abs(np.asarray(got) - reference).max())
    scale = max(1.0, float(np.abs(reference).max()))
    report = {"format": fmt, "path": str(path), "max_abs_diff": diff, "tolerance": tolerance, "logit_scale": scale,
              "bytes": path.stat().st_size + (path.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)}
    if not diff <= tolerance * scale:
        raise ExportMismatch(f"{path}: outputs differ from PyTorch by {diff:.3g} > {tolerance} x {scale:.3g} (the "
                             "logits' scale)")
    return report


INT8_MODES = ("static", "dynamic", "openvino")


def calibration_windows(predictor: SoundscapePredictor, calibration_dir: str | Path, max_windows: int = 256
                        ) -> np.ndarray:
    """Model inputs from the soundscapes of ``calibration_dir`` (``predictor``'s front end and statistics)."""
    files = audio_files(calibration_dir)
    if not files:
        raise FileNotFoundError(f"--calibration-dir {calibration_dir}: no audio soundscapes (.ogg, .wav, .flac, .mp3)")
    windows, count = [], 0
    for f in files:  # decode only as many files as the windows need
        windows.append(predictor.windows(f))
        count += len(windows[-1])
        if count >= max_windows:
            break
    return np.concatenate(windows)[:max_windows]


def validation_windows(predictor: SoundscapePredictor, run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The training run's validation fold as it was scored: the first window of each recording listed in
    ``val_predictions.csv`` (under the run's ``data_dir``/train_audio), with one-hot primary-label targets.
    Returns (windows, targets, labels); unreadable recordings are left out with a warning."""
    import logging  # noqa: PLC0415

    import pandas as pd  # noqa: PLC0415

    from dataloader.audio import AudioError  # noqa: PLC0415

    run_dir = Path(run_dir)
    predictions, summary = run_dir / "val_predictions.csv", run_dir / "summary.json"
    if not predictions.is_file() or not summary.is_file():
        raise FileNotFoundError(f"{run_dir}: no val_predictions.csv/summary.json (a finished training run has both)")
    data_dir = Path(json.loads(summary.read_text())["data_dir"])
    if not data_dir.is_absolute() and not data_dir.is_dir():  # written relative to the project folder
        data_dir = ROOT / data_dir
    audio_root = data_dir / "train_audio"
    val = pd.read_csv(predictions, usecols=["filename", "primary_label"])
    labels = list(predictor.labels)
    windows, rows = [], []
    for filename, label in zip(val["filename"], val["primary_label"]):
        try:
            windows.append(predictor.windows(audio_root / filename, max_windows=1))
        except AudioError as exc:
            logging.getLogger(__name__).warning("%s: %s -- left out of the validation score", filename, exc)
            continue
        rows.append(labels.index(label) if label in labels else -1)
    if not windows:
        raise FileNotFoundError(f"{run_dir}: none of its validation recordings could be read under {audio_root}")
    targets = np.zeros((len(rows), len(labels)), dtype=np.float32)
    for i, j in enumerate(rows):
        if j >= 0:
            targets[i, j] = 1.0
    return np.concatenate(windows), targets, labels


def quantize_int8(onnx_path: Path, mode: str, calibration_dir: str | Path, ground_truth: str | None = None,
                  max_windows: int = 256, eval_dir: str | Path | None = None,
                  validation_run: str | Path | None = None) -> dict[str, Any]:
    """Quantize the exported fp32 model to int8 and report the change against it.

    ``static``: ONNX Runtime, QDQ, per-channel weights, activations calibrated on windows of ``calibration_dir``
    -> ``<name>.int8_static.onnx``; ``dynamic``: ONNX Runtime, weights only -> ``<name>.int8_dynamic.onnx``;
    ``openvino``: NNCF post-training quantization of the OpenVINO model, calibrated the same way ->
    ``<name>.int8_openvino.xml`` (OpenVINO's int8 kernels; the fastest here). Each gets its ``.json``.

    Scores reported: with ``ground_truth`` (+ ``eval_dir``), the competition score on soundscapes; with
    ``validation_run`` (a training run folder), the run's validation metrics on its own validation fold."""
    import pandas as pd  # noqa: PLC0415

    from inference.predict import SoundscapePredictor, predict_folder  # noqa: PLC0415

    if mode not in INT8_MODES:
        raise ValueError(f"int8 mode {mode!r}: one of {', '.join(INT8_MODES)}")
    fp32 = SoundscapePredictor([onnx_path])
    windows = calibration_windows(fp32, calibration_dir, max_windows)
    out = onnx_path.with_name(f"{onnx_path.stem}.int8_{mode}{'.xml' if mode == 'openvino' else '.onnx'}")
    if mode == "static":
        quantize_onnx_static(onnx_path, out, windows)
    elif mode == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

        quantize_dynamic(str(onnx_path), str(out), weight_type=QuantType.QInt8)
    else:
        _quantize_openvino(onnx_path, out, windows)
    metadata_path(out).write_text(metadata_path(onnx_path).read_text())
    int8 = SoundscapePredictor([out])
    size = out.stat().st_size + (out.with_suffix(".bin").stat().st_size if mode == "openvino" else 0)
    report: dict[str, Any] = {"format": f"int8_{mode}", "path": str(out), "bytes": size,
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
    if validation_run:
        val_windows, targets, labels = validation_windows(fp32, validation_run)
        before = validation_scores(targets, fp32.predict_windows(val_windows), labels)
        after = validation_scores(targets, int8.predict_windows(val_windows), labels)
        report["validation_recordings"] = len(val_windows)
        for key in before:
            report.update({f"{key}_fp32": before[key], f"{key}_int8": after[key],
                           f"{key}_change": round(after[key] - before[key], 6)})
    return report


def quantize_onnx_static(onnx_path: Path, out: Path, windows: np.ndarray) -> None:
    """ONNX Runtime static int8 (QDQ, per-channel int8 weights, uint8 activations) calibrated on ``windows``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # noqa: PLC0415

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": windows[i:i + 16]} for i in range(0, len(windows), 16)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    quantize_static(str(onnx_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _quantize_openvino(onnx_path: Path, out: Path, windows: np.ndarray) -> None:
    import nncf  # noqa: PLC0415
    import openvino as ov  # noqa: PLC0415

    model = ov.convert_model(str(onnx_path))  # as for the fp32 IR: read_model(onnx) gave a 2.7x slower int8
    dataset = nncf.Dataset([windows[i:i + 1] for i in range(len(windows))])
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: stdout stays JSON lines
        quantized = nncf.quantize(model, dataset, subset_size=len(windows),
                                  preset=nncf.QuantizationPreset.PERFORMANCE)
    ov.save_model(quantized, str(out), compress_to_fp16=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out-dir", default="exported")
    p.add_argument("--no-openvino", action="store_true")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help="largest difference from PyTorch allowed, times the logits' scale (max |logit|, at least 1)")
    p.add_argument("--int8", nargs="+", choices=INT8_MODES, metavar="MODE",
                   help="static (ONNX Runtime, calibrated), dynamic (ONNX Runtime, weights only), "
                        "openvino (NNCF, calibrated): one or several")
    p.add_argument("--calibration-dir", help="soundscapes (.ogg) to calibrate and to measure the int8 change on")
    p.add_argument("--eval-dir", help="other soundscapes to score fp32 vs int8 on (default: the calibration ones)")
    p.add_argument("--ground-truth", help="solution CSV of the scored soundscapes: reports the score change")
    p.add_argument("--validation-run", help="training run folder whose validation fold scores fp32 vs int8 "
                   "(default: the checkpoint's own run when it has val_predictions.csv)")
    args = p.parse_args(argv)
    if args.int8 and not args.calibration_dir:
        p.error("--int8 needs --calibration-dir")
    validation_run = args.validation_run
    if args.int8 and validation_run is None:  # runs/<id>/checkpoints/best.pt -> runs/<id>
        own = Path(args.checkpoint).resolve().parent.parent
        validation_run = own if (own / "val_predictions.csv").is_file() else None
    try:
        reports = export(args.checkpoint, args.out_dir, not args.no_openvino, args.tolerance)
        for report in reports:
            print(json.dumps(report), flush=True)
        if args.int8:
            for mode in args.int8:
                print(json.dumps(quantize_int8(Path(reports[0]["path"]), mode, args.calibration_dir,
                                               args.ground_truth, eval_dir=args.eval_dir,
                                               validation_run=validation_run)), flush=True)
    except ExportMismatch as exc:
        print(f"export check failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
