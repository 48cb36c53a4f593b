"""The GPU training path: the benchmark's CPU size (CI), and on a CUDA machine a loop that never waits for the GPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_runs_its_every_row_at_a_small_size_on_cpu():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_train.py"), "--size", "small", "--no-compile"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    kinds = {row["what"] for row in rows}
    assert {"machine", "raw", "loader_alone", "trainer_inmemory", "trainer_inmemory_aug", "trainer_loader", "best",
            "prediction"} <= kinds
    assert rows[0]["size"] == "small"
    assert all(row["windows_per_s"] > 0 for row in rows if "windows_per_s" in row)
    raw = [row for row in rows if row["what"] == "raw"]
    assert {(row["batch"], row["precision"]) for row in raw} == {(8, "bf16"), (8, "fp32"), (16, "bf16"), (16, "fp32")}
    trainer = next(row for row in rows if row["what"] == "trainer_inmemory")
    assert trainer["ratio_to_raw"] > 0 and trainer["compile_s"] is None
    best = next(row for row in rows if row["what"] == "best")
    assert best["projected_epoch_s_birdclef_2024"] == pytest.approx(24_459 / best["windows_per_s"], rel=0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_training_loop_does_not_wait_for_the_gpu_between_steps():
    from dataloader.augment import BatchAugment
    from factory.losses import create_loss
    from factory.models import create_model
    from factory.optimizers import create_optimizer
    from utils.config_schema import AugmentationConfig
    from training.device_sync import device_syncs
    from training.trainer import Trainer, TrainOptions

    device = torch.device("cuda")
    model = create_model("mobilenetv3_small_050", num_classes=5, in_chans=1)
    trainer = Trainer(model, create_loss("bce"), create_optimizer("adamw", model, lr=1e-3, fused=True), None, device,
                      list("abcde"), augment=BatchAugment(AugmentationConfig(), np.full(32, 0.1, np.float32)),
                      options=TrainOptions(amp=True))
    batches = [(torch.randn(16, 1, 32, 64).pin_memory(), torch.rand(16, 5).round().pin_memory()) for _ in range(6)]
    trainer.train_epoch(batches, 0)  # warm-up
    syncs = device_syncs(lambda: trainer.train_epoch(batches, 1))
    assert len(syncs) <= 1, syncs  # the running loss, read once at the end of the epoch
