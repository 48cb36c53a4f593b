"""Train/inference parity, end to end: the probabilities a run writes for its validation windows
(``val_predictions.csv``) are the rows ``predict.py`` writes for the same windows of the same files with the run's
best checkpoint, to 1e-5 (the two CSVs are rounded to 7 and 6 decimals; the features themselves are identical)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import predict
import train_classifier

TOLERANCE = 1e-5


def validation_parity(run_dir: Path, audio_root: Path, work: Path) -> tuple[float, int]:
    """(max abs difference, rows compared) between the run's out-of-fold predictions and predict.py's rows."""
    val = pd.read_csv(run_dir / "val_predictions.csv", dtype={"row_id": str})
    folder = work / "val_audio"
    folder.mkdir()
    for name in val["filename"].unique():  # predict.py reads a folder: the validation recordings, linked
        os.symlink((audio_root / name).resolve(), folder / Path(name).name)
    summary = json.loads((run_dir / "summary.json").read_text())
    out = work / "predicted.csv"
    assert predict.main(["--checkpoint", summary["checkpoint"], "--audio-dir", str(folder), "--out", str(out),
                         "--decode-threads", "1"]) == 0
    predicted = pd.read_csv(out, dtype={"row_id": str}).set_index("row_id")
    labels = list(val.columns[4:])
    assert set(val["row_id"]) <= set(predicted.index), "every validation window is a predicted row"
    diff = np.abs(val[labels].to_numpy(np.float64) - predicted.loc[val["row_id"], labels].to_numpy(np.float64))
    return float(diff.max()), len(val)


def test_a_mel_models_validation_windows_are_predict_pys_first_rows(run, tmp_path):
    worst, rows = validation_parity(run["run_dir"], run["demo"] / "train_audio", tmp_path)
    assert rows >= 4 and worst <= TOLERANCE, f"max abs difference {worst:.2e} over {rows} recordings"


def test_chunked_validation_windows_equal_predict_pys_rows_at_every_chunk_boundary(run, tmp_path):
    args = run["args"] + [f"--set=paths.runs_dir={tmp_path / 'runs'}", "--set=data.crop=chunks",
                          "--set=data.pad_mode=repeat"]
    assert train_classifier.main(args) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    val = pd.read_csv(run_dir / "val_predictions.csv", dtype={"row_id": str})
    assert (val.groupby("filename").size() > 1).any(), "some recordings give several chunks"
    worst, rows = validation_parity(run_dir, run["demo"] / "train_audio", tmp_path)
    assert worst <= TOLERANCE, f"max abs difference {worst:.2e} over {rows} chunks"


def test_wav2vec2_trains_on_a_waveform_cache_and_its_validation_windows_are_predict_pys_rows(run, tmp_path):
    pytest.importorskip("transformers")
    from test_wav2vec2 import save_tiny_wav2vec2

    from factory.families import model_from_checkpoint
    from utils.checkpoints import load_checkpoint

    tiny = save_tiny_wav2vec2(tmp_path / "tiny_w2v")
    args = run["args"] + [f"--set=paths.runs_dir={tmp_path / 'runs'}", "--set=model.family=wav2vec2",
                          f"--set=model.type={tiny}", "--set=model.transfer_learning=true",
                          "--set=agent.layer_lr_decay=0.8", "--set=trainer.batch_size=4"]
    assert train_classifier.main(args) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "/wave-" in summary["cache"] and 0.0 <= summary["soundscape_score"] <= 1.0
    ckpt = load_checkpoint(summary["checkpoint"])
    assert ckpt["input"] == "waveform" and ckpt["data_process"]["sample_rate"] == 16000
    assert model_from_checkpoint(ckpt).hf.config.hidden_size == 32
    entry = np.load(next((run["work"] / "cache").glob("wave-*/mels/*.npy")))
    assert entry.dtype == np.float16 and entry.shape[0] == 1
    worst, rows = validation_parity(run_dir, run["demo"] / "train_audio", tmp_path)
    assert worst <= TOLERANCE, f"max abs difference {worst:.2e} over {rows} recordings"


def test_each_ensemble_member_sees_windows_standardised_with_its_own_statistics(run, tmp_path):
    import torch

    from inference.predict import SoundscapePredictor
    from utils.checkpoints import load_checkpoint

    first = json.loads((run["run_dir"] / "summary.json").read_text())["checkpoint"]
    payload = load_checkpoint(first)  # another fold's model: the same network, other statistics
    mean, std = np.asarray(payload["standardizer"]["mean"]), np.asarray(payload["standardizer"]["std"])
    payload["standardizer"] = {**payload["standardizer"], "mean": (mean + 3.0).tolist(), "std": (std * 1.3).tolist()}
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    soundscape = sorted((run["demo"] / "test_soundscapes").glob("*.ogg"))[0]
    alone = {path: SoundscapePredictor([path]).predict_file(soundscape)[1] for path in (first, other)}
    assert np.abs(alone[first] - alone[other]).max() > 1e-3, "the statistics matter to the model"
    together = SoundscapePredictor([first, other]).predict_file(soundscape)[1]
    np.testing.assert_allclose(together, (alone[first] + alone[other]) / 2, atol=1e-5)
