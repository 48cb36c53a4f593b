"""Submission-speed benchmark: end-to-end inference (decode + mel + model + CSV) per backend, in one run.

    python benchmarks/inference.py [--checkpoint CKPT] [--files 6] [--repeats 2] [--audio-dir DIR --ground-truth CSV]

Without ``--checkpoint``, an efficientnet_b0 with random weights and 182 classes stands in for a trained model
(speed does not depend on the weights). Without ``--audio-dir``, ``--files`` 4-minute 32 kHz OGG soundscapes are
generated. Prints one JSON line per backend (torch eager fp32 with contiguous tensors: the baseline; torch
channels_last; ONNX Runtime; OpenVINO f32, and bf16 (only where the CPU has bf16, else f32); int8: ONNX Runtime
static (QDQ, calibrated) and dynamic, OpenVINO (NNCF, calibrated)): ``windows_per_s`` end to end,
``realtime_factor``, ``model_only_windows_per_s`` (the model alone on pre-made inputs), ``ratio_to_model_only``,
``frontend_windows_per_s`` (decode + mel alone, every core), ``bound_windows_per_s`` (``1/(1/frontend +
1/model)``: the best end to end when both share the cores) and ``ratio_to_bound``, ``speedup_vs_torch_eager``, ``projected_test_minutes`` for
the ~52,800 windows of the BirdCLEF 2024 test set on this machine, the largest probability difference from
torch, and with ``--ground-truth`` the competition score.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEST_WINDOWS = 52_800  # BirdCLEF 2024: ~1,100 soundscapes x 48 windows (../shared/BIRDCLEF.md)


def stand_in_checkpoint(path: Path, model_name: str = "", classes: int = 182) -> Path:
    """A checkpoint of ``model_name`` (default: the config's model) with random weights, the default front end and
    ``classes`` classes."""
    import torch  # noqa: PLC0415

    from factory.models import create_model  # noqa: PLC0415
    from utils.checkpoints import save_checkpoint  # noqa: PLC0415
    from training.config import Config  # noqa: PLC0415

    cfg = Config()
    torch.manual_seed(0)
    model_name = model_name or cfg.model.type
    model = create_model(model_name, num_classes=classes)
    n_mels = cfg.data_process.n_mels
    save_checkpoint(path, {"model": model.state_dict(), "labels": [f"sp{i:03d}" for i in range(classes)],
                           "model_name": model_name, "model_kwargs": {"head": "linear", "in_chans": 1},
                           "data_process": cfg.to_dict()["data_process"], "window_s": cfg.data.window_s,
                           "pad_mode": cfg.data.pad_mode, "activation": "sigmoid", "input": "mel",
                           "standardizer": {"mode": "per_frequency", "mean": [-60.0] * n_mels,
                                            "std": [15.0] * n_mels}})
    return path


def model_only(predictor, shape: tuple[int, ...], n: int = 256) -> float:
    """Windows per second of the ensemble's runners alone on pre-made inputs (the predictor's batch size)."""
    batch = np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)
    predictor.predict_windows(batch[:predictor.batch_size])  # warm-up
    t0 = time.perf_counter()
    predictor.predict_windows(batch)
    return n / (time.perf_counter() - t0)


def frontend_only(predictor, files: list[Path], threads: int) -> float:
    """Windows per second of decode + mel + windowing alone, ``threads`` files at a time (every core)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        windows = sum(len(w) for w in pool.map(predictor.windows, files))
    return windows / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--files", type=int, default=6)
    p.add_argument("--audio-dir")
    p.add_argument("--ground-truth", help="solution CSV (row_id + species) to score each backend")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="timed passes per backend; the best counts")
    args = p.parse_args()
    import soundfile as sf  # noqa: PLC0415

    from inference.backends import load_metadata, torch_runner  # noqa: PLC0415
    from inference.budget import generate_soundscapes  # noqa: PLC0415
    from inference.export import export, input_shape, quantize_int8  # noqa: PLC0415
    from inference.predict import SoundscapePredictor, predict_folder  # noqa: PLC0415
    from utils.metrics import competition_score  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.checkpoint) if args.checkpoint else stand_in_checkpoint(tmp / "stand_in.pt")
        audio = Path(args.audio_dir) if args.audio_dir else generate_soundscapes(tmp / "audio", args.files)
        audio_s = sum(sf.info(str(f)).duration for f in audio.glob("*.ogg"))
        onnx_path, xml_path = (Path(r["path"]) for r in export(ckpt, tmp / "exported"))
        int8 = {mode: Path(quantize_int8(onnx_path, mode, audio)["path"])  # calibrated on these soundscapes
                for mode in ("static", "dynamic", "openvino")}
        meta = load_metadata(ckpt)
        columns = list(meta.labels)
        solution = pd.read_csv(args.ground_truth) if args.ground_truth else None
        if solution is not None:
            columns = list(solution.columns[1:])
        reference, torch_speed, frontend = None, None, None
        variants = (("torch_eager_fp32", ckpt, "f32"), ("torch_channels_last", ckpt, "f32"),
                    ("onnxruntime", onnx_path, "f32"), ("openvino", xml_path, "f32"),
                    ("openvino_throughput", xml_path, "f32"), ("openvino_bf16", xml_path, "bf16"), ("onnxruntime_int8_static", int8["static"], "f32"),
                    ("onnxruntime_int8_dynamic", int8["dynamic"], "f32"), ("openvino_int8", int8["openvino"], "f32"))
        for backend, model, precision in variants:
            predictor = SoundscapePredictor([model], batch_size=args.batch_size, precision=precision,
                                            openvino_mode="throughput" if backend.endswith("throughput") else "latency")
            if backend == "torch_eager_fp32":  # the plain baseline: contiguous tensors
                predictor.models[0].run = torch_runner(ckpt, channels_last=False)
            # best of --repeats passes (as timeit): this VM's speed drifts by 10-20 % from minute to minute
            only = max(model_only(predictor, input_shape(meta)) for _ in range(args.repeats))
            if frontend is None:  # the same for every backend: decode + mel on every core
                frontend = max(frontend_only(predictor, sorted(audio.glob("*.ogg")), os.cpu_count() or 1)
                               for _ in range(args.repeats))
            wall = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                frame = predict_folder(predictor, audio, columns)
                frame.to_csv(tmp / f"{backend}.csv", index=False)
                wall = min(wall, time.perf_counter() - t0)
            speed = len(frame) / wall
            probs = frame.iloc[:, 1:].to_numpy()
            if reference is None:
                reference, torch_speed = probs, speed
            row = {"backend": backend, "windows": len(frame), "windows_per_s": round(speed, 1),
                   "realtime_factor": round(audio_s / wall, 1), "model_only_windows_per_s": round(only, 1),
                   "ratio_to_model_only": round(speed / only, 3), "frontend_windows_per_s": round(frontend, 1),
                   # both share the cores: one window costs a front-end window plus a model window at best
                   "bound_windows_per_s": round(1 / (1 / frontend + 1 / only), 1),
                   "ratio_to_bound": round(speed * (1 / frontend + 1 / only), 3),
                   "speedup_vs_torch_eager": round(speed / torch_speed, 2),
                   "projected_test_minutes": round(TEST_WINDOWS / speed / 60, 1),
                   "max_prob_diff_vs_torch": float(np.abs(probs - reference).max()),
                   "model_bytes": model.stat().st_size + (model.with_suffix(".bin").stat().st_size
                                                          if model.suffix == ".xml" else 0)}
            if solution is not None:
                row["score"] = round(competition_score(solution, frame, "row_id"), 4)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
