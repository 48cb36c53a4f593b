"""Training speed on a GPU, printed as JSON lines (one per measurement; ratios against baselines of the same run).

    python benchmarks/gpu_train.py [--size auto|small|full] [--steps 30] [--batches 64,128,256]
                                   [--workers 4,8,14] [--prediction-files 8] [--no-compile] [--prediction-only]

On a CUDA machine: efficientnet_b0 on 1x128x320 windows (5 s at the default front end), 182 classes, and

1. ``raw``: the plain training step (forward, float32 loss, backward, fused AdamW) on batches already on the GPU,
   bf16 autocast and fp32, each batch size: the ceiling;
2. ``trainer_inmemory``: the project's ``Trainer.train_epoch`` on the same in-memory batches, no augmentation
   (``ratio_to_raw``, target >= 0.95), and ``trainer_inmemory_aug`` with the batch augmentation on the GPU;
3. ``loader_alone``: the project's DataLoader over a synthetic mel cache (random crops, standardisation, page-locked
   batches), 0 and each ``--workers`` count;
4. ``trainer_loader``: the trainer fed by that DataLoader, augmentation on the GPU (``ratio_to_inmemory`` against
   ``trainer_inmemory_aug``, target >= 0.95);
5. the same trainer rows with ``[trainer] compile`` (mode auto: reduce-overhead, CUDA graphs), the compilation's
   seconds apart from the steady speed;
6. ``sync_check``: the host-device synchronisations of the training loop per step
   (``torch.cuda.set_sync_debug_mode``), expected 0 (one read per epoch);
7. ``best``: the fastest end-to-end row (the trainer fed by the loader) and the projected seconds per epoch of
   BirdCLEF 2024's 24,459 recordings;
8. ``prediction``: the run's prediction stage (decode, mel, model, rows) on generated 4-minute soundscapes, on the
   GPU and on this machine's CPU (``gpu_vs_cpu``, target >= 10).

Without CUDA (or with ``--size small``) the same code runs on the CPU at a small size (mobilenetv3_small_050, 32 mels
x 64 frames, a few steps), so CI keeps it working; its figures are not GPU figures. ``--prediction-only --size full``
times the prediction stage alone at the full size (on a CPU-only machine: its CPU speed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.inference import stand_in_checkpoint  # noqa: E402
from benchmarks.loader import synthetic_cache  # noqa: E402
from dataloader.augment import BatchAugment  # noqa: E402
from dataloader.features import make_frontend  # noqa: E402
from dataloader.loaders import make_loaders  # noqa: E402
from dataloader.standardize import Standardizer  # noqa: E402
from factory.losses import create_loss  # noqa: E402
from factory.models import create_model  # noqa: E402
from factory.optimizers import create_optimizer  # noqa: E402
from training.config import Config  # noqa: E402
from utils.config_schema import DataProcessConfig  # noqa: E402
from training.device_sync import device_syncs  # noqa: E402
from utils.runtime import configure_cpu  # noqa: E402
from training.trainer import Trainer, TrainOptions, amp_enabled, compile_mode  # noqa: E402

BIRDCLEF_2024_RECORDINGS = 24_459


@dataclass(frozen=True)
class Size:
    """What is measured: the model, the window, the classes, the batch sizes and loader worker counts."""

    model: str
    n_mels: int
    hop_length: int  # at 32 kHz: 500 = 320 frames per 5-s window, 2500 = 64
    classes: int
    batches: tuple[int, ...]
    trainer_batch: int  # the batch of the trainer rows
    workers: tuple[int, ...]
    steps: int
    rounds: int
    prediction_files: int
    prediction_seconds: float


GPU = Size("efficientnet_b0", 128, 500, 182, (64, 128, 256), 256, (4, 8, 14), 30, 3, 8, 240.0)
SMALL = Size("mobilenetv3_small_050", 32, 2500, 12, (8, 16), 16, (0, 2), 3, 1, 2, 20.0)


def emit(row: dict[str, Any]) -> dict[str, Any]:
    """Print one JSON line (and return the row)."""
    print(json.dumps(row), flush=True)
    return row


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def new_trainer(size: Size, device: torch.device, amp: bool, augment: Optional[BatchAugment] = None,
                compiled: bool = False) -> Trainer:
    """The project's trainer as a run builds it: the model, fused AdamW on CUDA, BCE, channels_last."""
    torch.manual_seed(0)
    model = create_model(size.model, num_classes=size.classes, in_chans=1)
    optimizer = create_optimizer("adamw", model, lr=1e-3, weight_decay=1e-2, fused=device.type == "cuda")
    options = TrainOptions(amp=amp, compile=compiled, compile_mode=compile_mode("auto", device.type))
    return Trainer(model, create_loss("bce"), optimizer, None, device, [f"c{i}" for i in range(size.classes)],
                   augment=augment, options=options)


def device_batches(size: Size, batch: int, steps: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` random (x, y) batches already on the device."""
    g = torch.Generator().manual_seed(0)
    frames = 5 * 32000 // size.hop_length
    return [(torch.randn(batch, 1, size.n_mels, frames, generator=g).to(device),
             (torch.rand(batch, size.classes, generator=g) < 0.02).float().to(device)) for _ in range(steps)]


def timed(run: Any, rounds: int, device: torch.device) -> float:
    """Median seconds of ``run()`` over ``rounds`` calls (the device waited for at each end)."""
    times = []
    for _ in range(rounds):
        synchronize(device)
        t0 = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def raw_loop(size: Size, batch: int, amp: bool, device: torch.device) -> float:
    """Windows/s of the plain step (no trainer, no loader, no augmentation): the ceiling."""
    torch.manual_seed(0)
    fmt = torch.channels_last
    model = create_model(size.model, num_classes=size.classes, in_chans=1).to(device, memory_format=fmt).train()
    optimizer = create_optimizer("adamw", model, lr=1e-3, weight_decay=1e-2, fused=device.type == "cuda")
    loss_fn = create_loss("bce")
    batches = [(x.contiguous(memory_format=fmt), y) for x, y in device_batches(size, batch, size.steps, device)]

    def epoch() -> None:
        for x, y in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            loss_fn(logits.float(), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for x, y in batches[:2]:  # warm-up
        loss_fn(model(x).float(), y).backward()
        optimizer.zero_grad(set_to_none=True)
    return batch * size.steps / timed(epoch, size.rounds, device)


def trainer_speed(trainer: Trainer, feed: Iterable, windows: int, rounds: int, device: torch.device
                  ) -> tuple[float, float]:
    """(windows/s of ``train_epoch`` over ``feed``, seconds of the warm-up epoch: compilation included)."""
    t0 = time.perf_counter()
    trainer.train_epoch(feed, 0)  # warm-up: kernels, allocator, workers, and a compiled model's compilation
    synchronize(device)
    warmup = time.perf_counter() - t0
    return windows / timed(lambda: trainer.train_epoch(feed, 1), rounds, device), warmup


def sync_count(trainer: Trainer, batches: list, device: torch.device) -> Optional[float]:
    """Host-device synchronisations per step of ``train_epoch`` beyond its single end-of-epoch read (CUDA)."""
    if device.type != "cuda":
        return None
    syncs = device_syncs(lambda: trainer.train_epoch(batches, 1))
    return max(len(syncs) - 1, 0) / len(batches)  # the end-of-epoch read of the running loss is the one expected


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("auto", "small", "full"), default="auto",
                   help="auto = full on CUDA, small without")
    p.add_argument("--steps", type=int, help="timed steps per row")
    p.add_argument("--batches", help="raw-loop batch sizes, comma-separated")
    p.add_argument("--workers", help="DataLoader worker counts, comma-separated")
    p.add_argument("--prediction-files", type=int, help="generated soundscapes for the prediction rows")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--prediction-only", action="store_true", help="only the prediction stage's rows")
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    small = args.size == "small" or (args.size == "auto" and not cuda)
    size = SMALL if small else GPU
    size = replace(size, **{k: v for k, v in {
        "steps": args.steps, "prediction_files": args.prediction_files,
        "batches": tuple(int(b) for b in args.batches.split(",")) if args.batches else None,
        "workers": tuple(int(w) for w in args.workers.split(",")) if args.workers else None}.items() if v})
    threads = configure_cpu(0)
    amp = amp_enabled(Config().trainer.amp, device.type)  # the trainer rows train as a run would
    emit({"what": "machine", "device": torch.cuda.get_device_name(0) if cuda else "cpu", "cpu_cores": threads,
          "size": "small" if small else "gpu", "model": size.model,
          "window": [1, size.n_mels, 5 * 32000 // size.hop_length], "classes": size.classes, "amp": amp,
          "torch": torch.__version__})
    if cuda:
        torch.backends.cudnn.benchmark = True
    if args.prediction_only:
        with tempfile.TemporaryDirectory() as tmp:
            prediction_rows(size, device, Path(tmp))
        return

    raw = {}
    for batch in size.batches:
        for precision in ("bf16", "fp32"):
            raw[batch, precision] = emit({"what": "raw", "batch": batch, "precision": precision,
                                          "windows_per_s": round(raw_loop(size, batch, precision == "bf16",
                                                                          device), 1)})["windows_per_s"]

    batch, precision = size.trainer_batch, "bf16" if amp else "fp32"
    if (batch, precision) not in raw:
        raw[batch, precision] = raw_loop(size, batch, amp, device)
    batches = device_batches(size, batch, size.steps, device)
    windows = batch * size.steps
    cfg = Config()
    cfg.trainer.batch_size, cfg.data.shuffle = batch, True
    units = np.full(size.n_mels, 0.1, np.float32)
    augment = BatchAugment(cfg.augmentation, units)
    compile_options = (False,) if args.no_compile else (False, True)

    with tempfile.TemporaryDirectory() as tmp:
        table = synthetic_cache(Path(tmp), windows, size.n_mels, min_s=5.0, max_s=20.0)
        labels = [f"c{i}" for i in range(size.classes)]
        table["primary_label"] = [labels[i % size.classes] for i in range(len(table))]
        frontend = make_frontend(DataProcessConfig(n_mels=size.n_mels, hop_length=size.hop_length))

        def loader(workers: int) -> Any:
            trainer_cfg = replace(cfg.trainer, num_workers=workers)
            train, _ = make_loaders(table, table.iloc[:1], labels, cfg.data, trainer_cfg, frontend,
                                    Standardizer.identity(size.n_mels), pin_memory=cuda, drop_last=True)
            return train

        for workers in sorted({0, *size.workers}):
            feed = loader(workers)
            next(iter(feed))
            speed = windows / timed(lambda feed=feed: sum(1 for _ in feed), size.rounds, device)
            emit({"what": "loader_alone", "workers": workers, "batch": batch, "windows_per_s": round(speed, 1)})

        best: dict[str, Any] = {}
        for compiled in compile_options:
            plain = new_trainer(size, device, amp, compiled=compiled)
            speed, warmup = trainer_speed(plain, batches, windows, size.rounds, device)
            emit({"what": "trainer_inmemory", "compile": compiled, "batch": batch, "precision": precision,
                  "windows_per_s": round(speed, 1), "ratio_to_raw": round(speed / raw[batch, precision], 3),
                  "warmup_s": round(warmup, 2), "compile_s": plain.compile_seconds and round(plain.compile_seconds, 2)})
            with_aug = new_trainer(size, device, amp, augment, compiled=compiled)
            base, _ = trainer_speed(with_aug, batches, windows, size.rounds, device)
            emit({"what": "trainer_inmemory_aug", "compile": compiled, "batch": batch, "windows_per_s": round(base, 1),
                  "sync_per_step": sync_count(with_aug, batches, device)})
            # compiled: one worker count (each new trainer compiles again)
            for workers in size.workers[len(size.workers) // 2:][:1] if compiled else size.workers:
                trainer = new_trainer(size, device, amp, augment, compiled=compiled)
                speed, warmup = trainer_speed(trainer, loader(workers), windows, size.rounds, device)
                row = emit({"what": "trainer_loader", "compile": compiled, "workers": workers, "batch": batch,
                            "windows_per_s": round(speed, 1), "ratio_to_inmemory": round(speed / base, 3),
                            "warmup_s": round(warmup, 2)})
                if speed > best.get("windows_per_s", 0):
                    best = row
        emit({"what": "best", **{k: v for k, v in best.items() if k != "what"},
              "projected_epoch_s_birdclef_2024": round(BIRDCLEF_2024_RECORDINGS / best["windows_per_s"], 1)})

        prediction_rows(size, device, Path(tmp))


def prediction_rows(size: Size, device: torch.device, tmp: Path) -> None:
    """The run's prediction stage on generated soundscapes: on the GPU (when there is one) and on the CPU."""
    from inference.budget import generate_soundscapes  # noqa: PLC0415
    from inference.file_pipeline import default_decode_threads  # noqa: PLC0415
    from inference.predict import SoundscapePredictor, predict_folder  # noqa: PLC0415

    ckpt = stand_in_checkpoint(tmp / "stand_in.pt", size.model, size.classes)
    audio = generate_soundscapes(tmp / "audio", size.prediction_files, size.prediction_seconds)
    speeds = {}
    for where in (["cuda"] if device.type == "cuda" else []) + ["cpu"]:
        cuda = where == "cuda"
        predictor = SoundscapePredictor([ckpt], device=where, batch_size=512 if cuda else 64)
        labels = predictor.labels
        predict_folder(predictor, audio, labels, limit=1)  # warm-up: kernels, cuDNN's choices
        for _ in range(size.rounds):  # the best pass counts (as timeit): a shared machine's speed drifts
            t0 = time.perf_counter()
            frame = predict_folder(predictor, audio, labels,
                                   decode_threads=default_decode_threads("cuda" if cuda else "cpu"))
            speeds[where] = max(speeds.get(where, 0.0), len(frame) / (time.perf_counter() - t0))
        emit({"what": "prediction", "device": where, "windows": len(frame), "windows_per_s": round(speeds[where], 1)})
    if "cuda" in speeds:
        emit({"what": "prediction_ratio", "gpu_vs_cpu": round(speeds["cuda"] / speeds["cpu"], 2)})


if __name__ == "__main__":
    main()
