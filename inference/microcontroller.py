"""An int8 model and C headers for a microcontroller (seed 002's ESP32 workflow, seed 000's quantization).

    python -m inference.microcontroller --checkpoint runs/<id>/checkpoints/best.pt [--qat-epochs 5] [--out-dir mcu]

From a training run's checkpoint and its split files (``split/train.csv``, ``split/val.csv``):

1. ``model_fp32.onnx``: the float model (checked against PyTorch, as ``inference.export``);
2. ``model_int8_ptq.onnx``: post-training static int8 (ONNX Runtime QDQ, per-channel weights), activations
   calibrated on training windows;
3. ``model_int8_qat.onnx`` (``--qat-epochs`` > 0): quantization-aware training with ``torch.ao.quantization``
   (Conv-BN-ReLU fused for models that offer ``fuse_for_quantization``, fake-quantized weights and activations)
   on the training windows, batch norms folded, then quantized as in 2 (the trained weights are the ones
   that tolerate int8; activation ranges are calibrated again); ``model_qat_fp32.onnx`` is its float twin, so
   the report separates the effect of quantization from that of the extra fine-tuning;
4. ``model.h`` (the int8 model's bytes, QAT when trained, else PTQ) and ``mel_filters.h`` (the mel filter bank,
   the per-bin standardisation and the front-end constants, so the firmware computes the same input);
5. ``report.json`` (one JSON line per variant on stdout as well): file and weight bytes, CPU latency per window (ONNX
   Runtime, one thread, batch 1), and the score on the validation split (each recording's first window, as
   training validated) with its change from fp32.

The headers carry ONNX bytes: a firmware needs an ONNX-reading runtime, or a conversion to TFLite Micro
(onnx2tf + TensorFlow, not installed by this project).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inference.backends import metadata_path, onnx_runner, write_metadata  # noqa: E402
from inference.export import export, input_shape, quantize_onnx_static  # noqa: E402
from inference.predict import SoundscapePredictor  # noqa: E402
from utils.checkpoints import ModelMeta, load_checkpoint  # noqa: E402
from utils.metrics import validation_scores  # noqa: E402
from utils.tasks import get_task  # noqa: E402


def split_windows(predictor: SoundscapePredictor, split_csv: Path, classes: list[str], task: str,
                  max_windows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The windows of the recordings of a split file (every one, or the first ``max_windows``: validation
    scores the first, as training did), with targets from their labels (binary: 1 when the positive class
    ``classes[0]`` is among them)."""
    table = pd.read_csv(split_csv)
    windows, targets = [], []
    index = {c: i for i, c in enumerate(classes)}
    for path, labels in zip(table["path"], table["labels"]):
        w = predictor.windows(path, max_windows=max_windows)
        present = str(labels).split(";")
        y = np.zeros(len(classes), dtype=np.float32)
        if get_task(task).single_output:
            y[0] = float(classes[0] in present)
        else:
            y[[index[p] for p in present if p in index]] = 1.0
        windows.append(w)
        targets.append(np.repeat(y[None], len(w), axis=0))
    return np.concatenate(windows), np.concatenate(targets)


def score(probs: np.ndarray, targets: np.ndarray, classes: list[str], task: str) -> dict[str, float]:
    """Accuracy (threshold 0.5 for binary, arg-max otherwise) and the validation metric of training."""
    if get_task(task).single_output:
        accuracy = float(((probs[:, 0] >= 0.5) == (targets[:, 0] >= 0.5)).mean())
    else:
        accuracy = float((probs.argmax(1) == targets.argmax(1)).mean())
    return {"accuracy": round(accuracy, 4), "val_score": validation_scores(targets, probs, classes)["val_score"]}


def latency_ms(model_path: Path, shape: tuple[int, ...], runs: int = 200) -> float:
    """Median milliseconds per window: ONNX Runtime, one thread, batch 1 (the microcontroller's way)."""
    run = onnx_runner(model_path, threads=1)
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    for _ in range(10):
        run(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return round(1000 * float(np.median(times)), 4)


def qat_qconfig() -> Any:
    """Fake quantization ONNX can export (the default QAT qconfig's fused observer op cannot): uint8 activations
    per tensor, int8 symmetric weights per output channel, as ONNX Runtime's static quantization."""
    from torch.ao import quantization as q  # noqa: PLC0415

    return q.QConfig(
        activation=q.FakeQuantize.with_args(observer=q.MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                            dtype=torch.quint8, qscheme=torch.per_tensor_affine),
        weight=q.FakeQuantize.with_args(observer=q.MovingAveragePerChannelMinMaxObserver, quant_min=-128,
                                        quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric))


def trained_loss(payload: dict[str, Any]) -> str:
    """The loss the checkpoint's model was trained with (its config's ``[agent] loss``), for fine-tuning it."""
    return str(payload.get("config", {}).get("agent", {}).get("loss", "bce"))


def quantization_aware(payload: dict[str, Any], windows: np.ndarray, targets: np.ndarray, epochs: int,
                       out: Path, float_out: Path, lr: float = 1e-4, batch_size: int = 64) -> Path:
    """Fine-tune the checkpoint's model with fake-quantized weights and activations (``torch.ao.quantization``
    QAT), fold its batch norms into the convolutions, export the float result (``float_out``) and quantize it to
    int8 QDQ with ONNX Runtime (``out``: weights as trained for int8, activation ranges calibrated on
    ``windows``)."""
    from factory.families import model_from_checkpoint  # noqa: PLC0415
    from factory.losses import create_loss  # noqa: PLC0415

    torch.manual_seed(0)
    model = model_from_checkpoint(payload).train()
    if hasattr(model, "fuse_for_quantization"):
        model.fuse_for_quantization()
    wrapped = torch.nn.Sequential(torch.ao.quantization.QuantStub(), model, torch.ao.quantization.DeQuantStub())
    wrapped.qconfig = qat_qconfig()
    torch.ao.quantization.prepare_qat(wrapped, inplace=True)
    loss_fn = create_loss(trained_loss(payload))
    optimizer = torch.optim.Adam(wrapped.parameters(), lr=lr)
    x_all, y_all = torch.from_numpy(windows), torch.from_numpy(targets)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        if epoch == max(1, epochs - 1):  # last epoch: batch-norm statistics frozen, the ranges settle
            wrapped.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        for idx in torch.randperm(len(x_all), generator=generator).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(wrapped(x_all[idx]), y_all[idx]).backward()
            optimizer.step()
    folded = fold_qat(wrapped[1]).eval()
    with torch.no_grad():
        torch.onnx.export(folded, x_all[:2], str(float_out), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    quantize_onnx_static(float_out, out, windows[:512])
    return out


def fold_qat(model: torch.nn.Module) -> torch.nn.Module:
    """A float copy of a QAT-prepared model: each fused Conv-BN(-ReLU) becomes one convolution with the batch
    norm folded in (then ReLU), each QAT Linear/Conv a plain one with the trained weights."""
    import copy  # noqa: PLC0415

    from torch.ao.nn import qat as nqat  # noqa: PLC0415
    from torch.ao.nn.intrinsic import qat as iqat  # noqa: PLC0415
    from torch.nn.utils.fusion import fuse_conv_bn_eval  # noqa: PLC0415

    model = copy.deepcopy(model).eval()

    def plain_conv(m: torch.nn.Conv2d) -> torch.nn.Conv2d:
        conv = torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                               m.groups, m.bias is not None)
        conv.load_state_dict({k: v for k, v in m.state_dict().items() if k in ("weight", "bias")})
        return conv

    for name, child in list(model.named_children()):
        if isinstance(child, (iqat.ConvBnReLU2d, iqat.ConvBn2d)):
            fused = fuse_conv_bn_eval(plain_conv(child).eval(), child.bn.eval())
            replacement: torch.nn.Module = (torch.nn.Sequential(fused, torch.nn.ReLU())
                                            if isinstance(child, iqat.ConvBnReLU2d) else fused)
        elif isinstance(child, nqat.Linear):
            replacement = torch.nn.Linear(child.in_features, child.out_features, child.bias is not None)
            replacement.load_state_dict({k: v for k, v in child.state_dict().items() if k in ("weight", "bias")})
        elif isinstance(child, nqat.Conv2d):
            replacement = plain_conv(child)
        else:
            replacement = fold_qat(child)
        setattr(model, name, replacement)
    for module in model.modules():  # observers and fake quantizers left on other modules
        for attr in ("activation_post_process", "weight_fake_quant"):
            if hasattr(module, attr):
                delattr(module, attr)
    return model


def weight_bytes(model_path: Path) -> int:
    """Bytes of the model's stored tensors (weights, biases, quantization scales): what a device must hold."""
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    return int(sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(model_path)).graph.initializer))


def c_array_header(name: str, data: bytes, guard: str) -> str:
    """A C header with ``data`` as ``const unsigned char name[]`` and its length."""
    body = ",\n".join("  " + ", ".join(f"0x{b:02x}" for b in data[i:i + 16]) for i in range(0, len(data), 16))
    return (f"#ifndef {guard}\n#define {guard}\n\n/* {len(data)} bytes; generated by inference.microcontroller */\n"
            f"const unsigned int {name}_len = {len(data)};\n"
            f"const unsigned char {name}[] __attribute__((aligned(16))) = {{\n{body}\n}};\n\n#endif\n")


def mel_header(meta: ModelMeta) -> str:
    """The front end for the firmware: constants, the (n_mels, n_fft/2+1) Slaney mel filter bank and the
    per-bin standardisation (``x_std = (dB - offset) * scale``), exactly what training used."""
    from dataloader.features import MelInput, frontend_of_checkpoint  # noqa: PLC0415
    from dataloader.mel import DB_FLOOR  # noqa: PLC0415
    from dataloader.standardize import Standardizer  # noqa: PLC0415

    frontend = frontend_of_checkpoint(meta)
    if not isinstance(frontend, MelInput):
        raise ValueError(f"mel_filters.h describes a mel front end; this checkpoint takes {frontend.kind} input")
    dp = frontend.settings
    filters = frontend.mel.filters.T  # (n_mels, bins)
    offset, scale = Standardizer.from_dict(meta.standardizer).affine()
    frames = frontend.frames_for(meta.window_s)

    def vector(values: np.ndarray) -> str:
        return ", ".join(f"{v:.8e}f" for v in values)  # 1.00000000e+00f: always a valid C float literal

    def rows(matrix: np.ndarray) -> str:
        return ",\n".join("  {" + vector(row) + "}" for row in matrix)

    return (f"#ifndef MEL_FILTERS_H\n#define MEL_FILTERS_H\n\n/* generated by inference.microcontroller */\n"
            f"#define SAMPLE_RATE {dp.sample_rate}\n#define N_FFT {dp.n_fft}\n#define HOP_LENGTH {dp.hop_length}\n"
            f"#define N_MELS {dp.n_mels}\n#define N_BINS {filters.shape[1]}\n#define N_FRAMES {frames}\n"
            f"#define DB_FLOOR ({DB_FLOOR:.1f}f) /* 10*log10(max(power, 1e-10)), a fixed floor */\n\n"
            f"/* hann window of N_FFT, power spectrum, then mel[m] = sum_k mel_filters[m][k] * power[k] */\n"
            f"static const float mel_filters[N_MELS][N_BINS] = {{\n{rows(filters)}\n}};\n\n"
            f"/* standardised input = (mel_db - mel_offset[m]) * mel_scale[m] */\n"
            f"static const float mel_offset[N_MELS] = {{{vector(offset)}}};\n"
            f"static const float mel_scale[N_MELS] = {{{vector(scale)}}};\n\n#endif\n")


def build(checkpoint: str | Path, out_dir: str | Path, qat_epochs: int = 0) -> list[dict[str, Any]]:
    """Every step of the module docstring; returns one report per variant."""

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = load_checkpoint(checkpoint)
    meta = ModelMeta.from_payload(payload)
    run_dir = checkpoint.resolve().parent.parent
    if not (run_dir / "split" / "train.csv").is_file():
        raise FileNotFoundError(f"{run_dir}/split/train.csv not found: the checkpoint must come from a training run")
    task, classes = meta.task, list(meta.classes)
    fp32 = out_dir / "model_fp32.onnx"
    exported = Path(export(checkpoint, out_dir / "tmp", openvino=False)[0]["path"])
    exported.replace(fp32)
    metadata_path(exported).replace(metadata_path(fp32))
    exported.parent.rmdir()
    predictor = SoundscapePredictor([fp32])
    train_x, train_y = split_windows(predictor, run_dir / "split" / "train.csv", classes, task)
    val_x, val_y = split_windows(predictor, run_dir / "split" / "val.csv", classes, task, max_windows=1)
    variants = {"fp32": fp32, "int8_ptq": out_dir / "model_int8_ptq.onnx"}
    quantize_onnx_static(fp32, variants["int8_ptq"], train_x[:512])
    if qat_epochs > 0:  # its float twin tells quantization's effect apart from the extra fine-tuning
        variants["qat_fp32"] = out_dir / "model_qat_fp32.onnx"
        variants["int8_qat"] = quantization_aware(payload, train_x, train_y, qat_epochs, out_dir / "model_int8_qat.onnx",
                                                  float_out=variants["qat_fp32"])
    shape = input_shape(meta)
    reports, baseline = [], None
    for name, path in variants.items():
        write_metadata(path, meta)
        probs = SoundscapePredictor([path]).predict_windows(val_x)
        scores = score(probs, val_y, classes, task)
        baseline = baseline or scores
        reports.append({"variant": name, "path": str(path), "bytes": path.stat().st_size,
                        "weight_bytes": weight_bytes(path),
                        "latency_ms_per_window": latency_ms(path, shape), **scores,
                        "accuracy_change": round(scores["accuracy"] - baseline["accuracy"], 4),
                        "val_score_change": round(scores["val_score"] - baseline["val_score"], 6),
                        "validation_windows": len(val_x)})
    chosen = variants.get("int8_qat", variants["int8_ptq"])
    (out_dir / "model.h").write_text(c_array_header("model_onnx", chosen.read_bytes(), "MODEL_H"))
    (out_dir / "mel_filters.h").write_text(mel_header(meta))
    (out_dir / "report.json").write_text(json.dumps({"checkpoint": str(checkpoint), "model_h": chosen.name,
                                                    "variants": reports}, indent=1))
    return reports


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out-dir", default="mcu")
    p.add_argument("--qat-epochs", type=int, default=0, help="quantization-aware fine-tuning epochs (0 = PTQ only)")
    args = p.parse_args(argv)
    for report in build(args.checkpoint, args.out_dir, args.qat_epochs):
        print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
