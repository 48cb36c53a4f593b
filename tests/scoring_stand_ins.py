"""Stand-ins the scoring-run tests share: a small random-weight CNN checkpoint, a competition folder of an edition's
layout with generated test soundscapes, and predict.py's command line run on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

import predict

SR = 32000


def stand_in(path: Path, labels, window_s: float = 5.0, n_mels: int = 128, seed: int = 0) -> Path:
    """A small CNN checkpoint with random weights taking ``window_s``-s inputs of an ``n_mels`` mel."""
    from factory.models import create_model
    from training.config import Config
    from utils.checkpoints import save_checkpoint

    cfg = Config()
    torch.manual_seed(seed)
    model = create_model("mobilenetv3_small_050", num_classes=len(labels), in_chans=1)
    data_process = {**cfg.to_dict()["data_process"], "n_mels": n_mels}
    save_checkpoint(path, {"model": model.state_dict(), "labels": list(labels), "model_name": "mobilenetv3_small_050",
                           "model_kwargs": {"head": "linear", "in_chans": 1}, "data_process": data_process,
                           "window_s": window_s, "pad_mode": "repeat", "activation": "sigmoid", "input": "mel",
                           "standardizer": {"mode": "per_frequency", "mean": [-60.0] * n_mels,
                                            "std": [15.0] * n_mels}})
    return path


def competition(root: Path, edition: str = "2025", files: dict[str, float] | None = None,
                columns=("a", "b", "c")) -> Path:
    """A competition folder of ``edition``'s layout with generated test soundscapes (name -> seconds)."""
    names = {"2024": ("train_metadata.csv", "eBird_Taxonomy_v2021.csv"), "2025": ("train.csv", "taxonomy.csv"),
             "2026": ("train.csv", "taxonomy.csv", "train_soundscapes_labels.csv")}[edition]
    (root / "test_soundscapes").mkdir(parents=True)
    for name in names:
        (root / name).write_text("x\n")
    pd.DataFrame(columns=["row_id", *columns]).to_csv(root / "sample_submission.csv", index=False)
    rng = np.random.default_rng(0)
    for name, seconds in (files or {"s1": 60.0, "s2": 12.3}).items():
        sf.write(root / "test_soundscapes" / f"{name}.ogg", (0.05 * rng.standard_normal(int(seconds * SR)))
                 .astype(np.float32), SR, format="OGG", subtype="VORBIS")
    return root


def run_predict(comp: Path, models: list[Path], out: Path, *extra: str) -> pd.DataFrame:
    assert predict.main(["--checkpoint", *map(str, models), "--audio-dir", str(comp / "test_soundscapes"),
                         "--out", str(out), *extra]) == 0
    return pd.read_csv(out)
