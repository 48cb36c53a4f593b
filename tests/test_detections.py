"""Detections from field recordings: window arithmetic, streaming windows, merging, thresholds, the tables."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import detect
from inference.detection_tables import raven_name
from inference.detections import (
    RAVEN_COLUMNS,
    FileScores,
    OutputLayout,
    merge_detections,
    slot_scores,
)
from inference.file_pipeline import file_chunks
from inference.windows import window_starts
from inference.predict import SoundscapePredictor
from inference.submission import n_windows
from utils.thresholds import thresholds_for_precision

SR = 32000


def stand_in(path, labels, activation="sigmoid", seed=0):
    """A checkpoint of a small CNN with random weights on the default front end (what detect.py reads)."""
    from factory.models import create_model
    from utils.checkpoints import save_checkpoint
    from training.config import Config

    cfg = Config()
    torch.manual_seed(seed)
    model = create_model("mobilenetv3_small_050", num_classes=len(labels), in_chans=1)
    n = cfg.data_process.n_mels
    save_checkpoint(path, {"model": model.state_dict(), "labels": list(labels), "model_name": "mobilenetv3_small_050",
                           "model_kwargs": {"head": "linear", "in_chans": 1},
                           "data_process": cfg.to_dict()["data_process"], "window_s": 5.0, "pad_mode": "repeat",
                           "activation": activation, "input": "mel",
                           "standardizer": {"mode": "per_frequency", "mean": [-60.0] * n, "std": [15.0] * n}})
    return path


def noise(path, seconds, sr=SR, seed=0, channels=1):
    rng = np.random.default_rng(seed)
    sf.write(path, (0.05 * rng.standard_normal((int(seconds * sr), channels))).astype(np.float32), sr)
    return path


@pytest.mark.parametrize("duration, hop, expected", [
    (10.0, 5.0, [0, 5]),  # exact
    (3.0, 5.0, [0]),  # shorter than a window: one, padded
    (12.3, 5.0, [0, 5, 10]),  # the last one partial
    (12.3, 1.0, [0, 1, 2, 3, 4, 5, 6, 7, 8]),  # ... still starting before the end, padded
    (7.0, 2.5, [0, 2.5]),
])
def test_window_starts(duration, hop, expected):
    np.testing.assert_allclose(window_starts(duration, 5.0, hop), expected)


def test_with_the_hop_of_a_window_the_windows_are_the_submission_rows():
    for duration in np.arange(0.5, 61.0, 0.7):
        assert len(window_starts(duration, 5.0, 5.0)) == n_windows(duration, 5.0), duration
    with pytest.raises(ValueError):
        window_starts(10.0, 5.0, 0.0)


def test_overlapping_windows_above_threshold_merge_into_detections_per_class():
    starts = np.arange(6, dtype=float)
    scores = FileScores("a.wav", 10.0, 6, starts, np.minimum(starts + 5, 10.0),
                        np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.7], [0.95, 0.1], [0.96, 0.65], [0.1, 0.2]]))
    rows = merge_detections(scores, ["bird", "saw"], np.array([0.5, 0.6]))
    got = [(r["class"], r["start_s"], r["end_s"], round(r["max_score"], 2), round(r["mean_score"], 3)) for r in rows]
    assert got == [("bird", 0.0, 6.0, 0.9, 0.85), ("bird", 3.0, 9.0, 0.96, 0.955), ("saw", 1.0, 7.0, 0.7, 0.7),
                   ("saw", 4.0, 9.0, 0.65, 0.65)]


def test_event_bins_of_overlapping_windows_keep_the_highest_score_and_stop_at_the_end():
    layout = OutputLayout.of([f"{c}@{k}" for c in ("rumble", "shot") for k in range(5)])
    assert layout.classes == ["rumble", "shot"] and layout.bins == 5
    assert OutputLayout.of(["a@b", "c"]).bins == 0
    probs = np.zeros((2, 10), dtype=np.float32)
    probs[0, 0:5] = [0.1, 0.2, 0.9, 0.3, 0.1]  # window 0 (0-5 s), rumble bins
    probs[1, 0:5] = [0.8, 0.1, 0.1, 0.1, 0.1]  # window 1 starts at 2 s: its bin 0 is the file's bin 2
    scores = slot_scores("e.wav", 6.5, np.array([0.0, 2.0]), 5.0, probs, layout)
    np.testing.assert_allclose(scores.starts, [0, 1, 2, 3, 4, 5, 6])  # bin 7 (7-8 s) is past the end
    np.testing.assert_allclose(scores.scores[:, 0], [0.1, 0.2, 0.9, 0.3, 0.1, 0.1, 0.1], atol=1e-6)
    assert scores.ends[-1] == 6.5


def test_thresholds_reach_the_asked_precision_on_the_set_they_come_from():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < 0.3).astype(float)
    y[:, 2] = 0
    s = np.clip(y * 0.4 + rng.random((400, 3)) * 0.7, 0, 1)
    table = thresholds_for_precision(y, s, ["a", "b", "c"], 0.9)
    for c in range(2):
        fired = s[:, c] >= table.loc[c, "threshold"]
        assert table.loc[c, "reached"] and y[fired, c].mean() >= 0.9
        lower = s[:, c] >= np.max(s[:, c][s[:, c] < table.loc[c, "threshold"]])  # the next lower threshold
        assert y[lower, c].mean() < 0.9 or lower.sum() == fired.sum()
    assert table.loc[2, "threshold"] == 1.0 and not table.loc[2, "reached"]  # no positives: never fires


def test_streamed_windows_are_the_training_front_ends_windows_for_short_and_long_files(tmp_path):
    """The one window cutter, cutting while the mel's blocks pass, gives exactly the windows the training datasets
    cut from a whole file's features (FrontEnd.windows), for a short file and one long enough to be streamed."""
    ckpt = stand_in(tmp_path / "m.pt", ["a", "b"])
    predictor = SoundscapePredictor([ckpt], batch_size=16)
    group = predictor.groups[0]
    short = noise(tmp_path / "short.wav", 12.3)
    long = noise(tmp_path / "long.wav", 305.0, sr=16000)  # > 300 s: decoded, resampled and transformed in blocks
    whole = {}
    for path in (short, long):
        duration, chunks = file_chunks(predictor, path)
        parts = [windows[0] for _, windows in chunks]
        assert all(len(windows) <= 16 for windows in parts)
        features, seconds = group.frontend.features(path)
        whole[path] = group.frontend.windows(features, n_windows(seconds, 5.0), group.frames, group.standardizer,
                                             (), group.pad_mode)
        np.testing.assert_array_equal(np.concatenate(parts), whole[path])
        np.testing.assert_array_equal(predictor.windows(path), whole[path])
    overlapping = np.concatenate([w[0] for _, w in file_chunks(predictor, short, hop_s=1.0)[1]])
    assert len(overlapping) == 9
    np.testing.assert_array_equal(overlapping[5], whole[short][1])  # the window at 5 s


@pytest.mark.parametrize("kind, labels, activation", [
    ("multiclass", ["car", "drone", "speech"], "softmax"),
    ("binary", ["chainsaw"], "sigmoid"),
    ("events", [f"{c}@{k}" for c in ("rumble", "shot") for k in range(10)], "sigmoid"),
])
def test_detect_writes_every_table_for_each_task_and_lists_an_unreadable_file(tmp_path, kind, labels, activation):
    ckpt = stand_in(tmp_path / "m.pt", labels, activation)
    audio = tmp_path / "field"
    (audio / "site b").mkdir(parents=True)
    noise(audio / "a.wav", 11.0)
    noise(audio / "site b" / "b.flac", 7.0, sr=22050, seed=1, channels=2)  # another rate, stereo
    (audio / "broken.ogg").write_bytes(b"not audio at all")
    out = tmp_path / "out"
    layout = OutputLayout.of(labels)
    pd.DataFrame({"class": layout.classes, "threshold": 0.0}).to_csv(tmp_path / "thr.csv", index=False)
    assert detect.main(["--checkpoint", str(ckpt), "--audio-dir", str(audio), "--out-dir", str(out), "--hop-s", "2",
                        "--min-score", "0", "--thresholds", str(tmp_path / "thr.csv"), "--review", "2"]) == 0
    unreadable = pd.read_csv(out / "unreadable.csv")
    assert unreadable["file"].tolist() == ["broken.ogg"] and unreadable["reason"].str.len().min() > 0
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["file"]) == {"a.wav", "site b/b.flac"} and set(scores["class"]) == set(layout.classes)
    slots = {"a.wav": len(window_starts(11.0, 5.0, 2.0)), "site b/b.flac": len(window_starts(7.0, 5.0, 2.0))}
    if kind == "events":  # every 0.5-s bin of each file
        slots = {"a.wav": 22, "site b/b.flac": 14}
    for file, count in slots.items():
        assert (scores["file"] == file).sum() == count * len(layout.classes)
    if kind == "multiclass":  # softmax scores
        per_window = scores[scores["file"] == "a.wav"].groupby("start_s")["score"].sum()
        np.testing.assert_allclose(per_window, 1.0, atol=1e-4)
    detections = pd.read_csv(out / "detections.csv")
    assert len(detections) == 2 * len(layout.classes)  # threshold 0: one run per class and file
    assert (detections.groupby("file")["end_s"].max() == pd.Series({"a.wav": 11.0, "site b/b.flac": 7.0})).all()
    raven = pd.read_csv(out / "raven" / raven_name("site b/b.flac"), sep="\t")
    assert list(raven.columns) == RAVEN_COLUMNS and raven["Selection"].tolist() == list(range(1, len(raven) + 1))
    assert (raven["High Freq (Hz)"] == 14000.0).all() and set(raven["Species"]) == set(layout.classes)
    combined = pd.read_csv(out / "raven_selections.csv")
    assert combined.columns[0] == "File" and len(combined) == len(detections)
    summary = pd.read_csv(out / "file_summary.csv")
    assert summary.set_index("file")["duration_s"].to_dict() == {"a.wav": 11.0, "site b/b.flac": 7.0}
    assert all(math.isfinite(x) for x in summary["windows"])
    assert len(list((out / "review").glob("*.png"))) == len(layout.classes)


def test_detect_picks_up_the_training_runs_thresholds(run, tmp_path, capsys):
    ckpt = run["summary"]["checkpoint"]
    thresholds = pd.read_csv(run["run_dir"] / "thresholds.csv")
    assert list(thresholds.columns) == ["class", "threshold", "precision", "recall", "positives", "reached",
                                        "source"]
    assert set(thresholds["source"]) == {"validation"}  # the 2024 demo has no labelled soundscapes
    audio = tmp_path / "field"
    audio.mkdir()
    noise(audio / "x.wav", 9.0)
    assert detect.main(["--checkpoint", ckpt, "--audio-dir", str(audio), "--out-dir", str(tmp_path / "o")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["recordings"] == 1 and summary["windows"] == 2 and summary["unreadable"] == 0


def test_inference_modules_do_not_import_torch_for_exported_models():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = "import sys; import detect, predict, inference.detection_tables; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_labelled_soundscape_windows_set_the_thresholds_of_the_classes_they_have_enough_of(tmp_path):
    from training.evaluation import write_thresholds

    rng = np.random.default_rng(1)
    y = (rng.random((200, 3)) < 0.3).astype(float)
    s = np.clip(y * 0.5 + rng.random((200, 3)) * 0.6, 0, 1)
    path = tmp_path / "thresholds.csv"
    write_thresholds(path, y, s, ["a", "b", "c"], 0.9)  # the validation split
    soundscape_y = np.zeros((40, 3))
    soundscape_y[:10, 0], soundscape_y[:3, 1], soundscape_y[:8, 2] = 1, 1, 1  # a: 10 positives, b: 3 (too few)
    soundscape_s = rng.random((40, 3)) * 0.2 + soundscape_y * 0.7
    soundscape_s[:, 2] = rng.random(40)  # c: enough positives, but its scores never reach the precision
    write_thresholds(path, soundscape_y, soundscape_s, ["a", "b", "c"], 0.9, source="soundscape_validation")
    table = pd.read_csv(path)
    assert table["class"].tolist() == ["a", "b", "c"]
    assert table["source"].tolist() == ["soundscape_validation", "validation", "validation"]
    assert table.loc[0, "positives"] == 10 and table.loc[0, "precision"] >= 0.9


def test_a_run_stopped_before_a_tables_first_row_leaves_a_table_a_rerun_appends_to(tmp_path):
    """Every table's header is on disk from the start: a run killed before its first unreadable recording left an
    empty ``unreadable.csv`` (the header still in a buffer), and the rerun appended a row without a header."""
    from inference.detection_tables import HEADERS, start_tables, write_tables
    from inference.detections import FileScores

    out = tmp_path / "tables"
    good = FileScores("a.wav", 5.0, 1, np.array([0.0]), np.array([5.0]), np.array([[0.9, 0.1]]))
    broken = FileScores("b.wav", 0.0, 0, np.zeros(0), np.zeros(0), np.zeros((0, 2)), error="unreadable: not audio")

    def stopped():
        yield good
        on_disk = {name: (out / f"{name}.csv").read_text().splitlines() for name in HEADERS}
        assert all(lines and lines[0] == ",".join(HEADERS[name]) for name, lines in on_disk.items()), on_disk
        raise KeyboardInterrupt

    settings = {"hop_s": 5.0}
    assert start_tables(out, settings) == set()
    with pytest.raises(KeyboardInterrupt):
        write_tables(stopped(), ["x", "y"], np.array([0.5, 0.5]), 0.0, out, 0, 16000)
    (out / "unreadable.csv").write_text("")  # as the earlier code left it when killed
    assert start_tables(out, settings) == {"a.wav"}
    write_tables(iter([broken]), ["x", "y"], np.array([0.5, 0.5]), 0.0, out, 0, 16000, resume=True)
    assert pd.read_csv(out / "unreadable.csv").to_dict("records") == [{"file": "b.wav",
                                                                       "reason": "unreadable: not audio"}]
    assert list(pd.read_csv(out / "file_summary.csv")["file"]) == ["a.wav"]
