"""Training-step benchmarks on this machine, printed as JSON lines.

    python benchmarks/train_step.py [--model efficientnet_b0] [--batch 32] [--steps 5] [--skip-allocator]

1. The loader is never the bottleneck: training windows per second of the default model and trainer fed by
   the real DataLoader over a mel cache (random crops, standardisation, the trainer's batch augmentation)
   against pre-made in-memory batches, same run: ``loader_windows_per_s``, ``inmemory_windows_per_s``,
   ``ratio`` (target >= 0.9).
2. glibc's default large-allocation mmap vs. keeping buffers on the heap (each variant in its own process,
   as an allocator setting cannot be undone in-process): seconds and minor page faults per step, speed-up.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def measure(model_name: str, batch: int, steps: int, keep_on_heap: bool) -> dict:
    """Seconds and minor page faults per training step (after 2 warm-up steps)."""
    sys.path.insert(0, str(ROOT))
    import torch  # noqa: PLC0415

    from factory.models import create_model  # noqa: PLC0415
    from utils.runtime import available_cores, keep_large_allocations_on_heap  # noqa: PLC0415

    if keep_on_heap:
        keep_large_allocations_on_heap()
    torch.set_num_threads(available_cores())
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=182, in_chans=1).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(batch, 1, 128, 320).contiguous(memory_format=torch.channels_last)
    y = torch.rand(batch, 182)
    for i in range(steps + 2):
        if i == 2:
            t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"variant": "heap" if keep_on_heap else "default_malloc", "model": model_name, "batch": batch,
            "step_s": round((time.perf_counter() - t0) / steps, 4),
            "sys_s_per_step": round((r1.ru_stime - r0.ru_stime) / steps, 4),
            "page_faults_per_step": int((r1.ru_minflt - r0.ru_minflt) / steps)}


def loader_vs_inmemory(model_name: str, batch: int, steps: int, rounds: int = 3) -> dict:
    """Windows/s of ``steps`` training steps fed by the project's DataLoader vs by the same batches in memory
    (median of ``rounds`` alternated rounds)."""
    import tempfile  # noqa: PLC0415

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch  # noqa: PLC0415
    from loader import synthetic_cache  # noqa: PLC0415

    from dataloader.augment import BatchAugment  # noqa: PLC0415
    from dataloader.features import make_frontend  # noqa: PLC0415
    from dataloader.loaders import make_loaders  # noqa: PLC0415
    from dataloader.standardize import Standardizer  # noqa: PLC0415
    from factory.losses import create_loss  # noqa: PLC0415
    from factory.models import create_model  # noqa: PLC0415
    from factory.optimizers import create_optimizer  # noqa: PLC0415
    from training.config import Config  # noqa: PLC0415
    from utils.runtime import configure_cpu  # noqa: PLC0415
    from training.trainer import Trainer  # noqa: PLC0415

    cfg = Config()
    cfg.trainer.batch_size = batch
    threads = configure_cpu(cfg.trainer.threads)
    with tempfile.TemporaryDirectory() as tmp:
        table = synthetic_cache(Path(tmp), batch * steps, cfg.data_process.n_mels)
        labels = sorted(table["primary_label"].unique())
        standardizer = Standardizer.identity(cfg.data_process.n_mels)
        loader, _ = make_loaders(table, table.iloc[:1], labels, cfg.data, cfg.trainer, make_frontend(cfg.data_process),
                                 standardizer)
        augment = BatchAugment(cfg.augmentation, np.full(cfg.data_process.n_mels, 0.1, np.float32))

        def trainer(with_augment: bool) -> Trainer:
            torch.manual_seed(0)
            model = create_model(model_name, num_classes=len(labels))
            opt = create_optimizer("adamw", model, lr=1e-3, weight_decay=1e-2)
            return Trainer(model, create_loss("bce"), opt, None, torch.device("cpu"), labels,
                           augment=augment if with_augment else None)

        in_memory = [augment(x, y) for x, y in loader]  # the same batches, loaded and augmented beforehand
        feeds = {"inmemory": (in_memory, trainer(False)), "loader": (loader, trainer(True))}
        for _, t in feeds.values():
            t.train_epoch(in_memory[:2], 0)  # first-step allocations
        times: dict[str, list[float]] = {name: [] for name in feeds}
        for _ in range(rounds):  # alternated, so a drift of this machine's speed hits both alike
            for name, (feed, t) in feeds.items():
                t0 = time.perf_counter()
                t.train_epoch(feed, 1)
                times[name].append(time.perf_counter() - t0)
        results = {name: batch * steps / statistics.median(ts) for name, ts in times.items()}
    return {"model": model_name, "batch": batch, "steps": steps, "rounds": rounds, "threads": threads,
            "dataloader_workers": cfg.trainer.num_workers,
            "loader_windows_per_s": round(results["loader"], 2), "inmemory_windows_per_s": round(results["inmemory"], 2),
            "ratio": round(results["loader"] / results["inmemory"], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet_b0")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--skip-allocator", action="store_true", help="only the loader vs in-memory comparison")
    p.add_argument("--variant", choices=("default_malloc", "heap", "loader"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant == "loader":
        print(json.dumps(loader_vs_inmemory(args.model, args.batch, args.steps)))
        return
    if args.variant:
        print(json.dumps(measure(args.model, args.batch, args.steps, args.variant == "heap")))
        return
    out = subprocess.run([sys.executable, __file__, "--variant", "loader", "--model", args.model, "--batch",
                          str(args.batch), "--steps", str(args.steps)], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    print(out, flush=True)
    if args.skip_allocator:
        return
    results = {}
    for variant in ("default_malloc", "heap"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--model", args.model, "--batch",
                              str(args.batch), "--steps", str(args.steps)], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
        results[variant] = json.loads(out)
        print(out, flush=True)
    print(json.dumps({"speedup_heap_vs_default": round(results["default_malloc"]["step_s"] /
                                                      results["heap"]["step_s"], 2)}))


if __name__ == "__main__":
    main()
