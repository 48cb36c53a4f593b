"""Training-batch throughput from the mel cache: 5-s random crops + batch augmentation.

    python benchmarks/loader.py [--workers 2] [--files 400] [--seconds 20]

Writes a synthetic cache of float16 mels (recording lengths 1-120 s) in a temporary folder, then reads
training batches through the project's DataLoader with augmentation on (gain, overlay, noise, SpecAugment),
and prints JSON lines: windows per second with no DataLoader worker (the baseline), then with ``--workers``
workers and the augmentation off, in the training process (where it runs on a GPU) and in the workers
(what the trainer does for CPU training), in the same run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataloader.augment import BatchAugment  # noqa: E402
from dataloader.features import make_frontend  # noqa: E402
from dataloader.loaders import make_loaders  # noqa: E402
from dataloader.standardize import Standardizer  # noqa: E402
from training.config import Config  # noqa: E402


def synthetic_cache(folder: Path, files: int, n_mels: int, seed: int = 0, min_s: float = 1.0, max_s: float = 120.0):
    """``files`` float16 mels of ``min_s``-``max_s`` s (log-uniform) at 64 frames/s; returns a table like the
    cache's."""
    import pandas as pd  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(files):
        frames = int(np.exp(rng.uniform(np.log(64 * min_s), np.log(64 * max_s))))
        path = folder / f"{i}.npy"
        np.save(path, rng.standard_normal((n_mels, frames)).astype(np.float16))
        rows.append({"entry": str(path), "primary_label": f"c{i % 20}", "secondary_labels": [], "filename": path.name})
    return pd.DataFrame(rows)


def throughput(table, cfg: Config, workers: int, seconds: float, where: str) -> dict:
    """Windows per second of augmented training batches; ``where`` the augmentation runs: ``main`` (the
    training process, as on a GPU device), ``workers`` (in the DataLoader workers, the CPU-training setting)
    or ``off``."""
    cfg.trainer.num_workers = workers
    labels = sorted(table["primary_label"].unique())
    augment = BatchAugment(cfg.augmentation, np.full(cfg.data_process.n_mels, 0.1, np.float32))
    loader, _ = make_loaders(table, table.iloc[:1], labels, cfg.data, cfg.trainer,
                             make_frontend(cfg.data_process),
                             Standardizer.identity(cfg.data_process.n_mels),
                             augment=augment if where == "workers" else None)
    windows, t0 = 0, None
    while True:
        for i, (x, y) in enumerate(loader):
            if where == "main":
                x, y = augment(x, y)
            if t0 is None and i == 2:  # workers started, first batches out
                t0, windows = time.perf_counter(), 0
            windows += len(x)
            if t0 is not None and time.perf_counter() - t0 >= seconds:
                elapsed = time.perf_counter() - t0
                return {"workers": workers, "augmentation": where, "batch_size": cfg.trainer.batch_size,
                        "windows_per_s": round(windows / elapsed, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--files", type=int, default=400)
    p.add_argument("--seconds", type=float, default=15.0)
    args = p.parse_args()
    import torch  # noqa: PLC0415

    torch.set_num_threads(1)
    cfg = Config()
    with tempfile.TemporaryDirectory() as tmp:
        table = synthetic_cache(Path(tmp), args.files, cfg.data_process.n_mels)
        base = throughput(table, cfg, 0, args.seconds, "main")
        print(json.dumps(base), flush=True)
        for where in ("off", "main", "workers"):
            res = throughput(table, cfg, args.workers, args.seconds, where)
            res["ratio_vs_no_workers"] = round(res["windows_per_s"] / base["windows_per_s"], 2)
            res["meets_target_2000"] = res["windows_per_s"] >= 2000
            print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
