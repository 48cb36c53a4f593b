"""The parts the neighbouring jobs are made of: CSV and Raven sources, holdout splits, chunks, event targets,
events back from frame probabilities, event-based F1, class weights."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from dataloader.curation import class_weights, cut_chunks, downsample_classes, drop_duration_outliers
from dataloader.dataset import event_targets, make_targets
from dataloader.sources import DataSourceError
from dataloader.sources.local import load_csv, read_raven
from dataloader.splits import holdout_assign, make_split
from factory.losses import create_loss
from utils.events import event_metrics, probs_to_events


def test_csv_source_reads_multi_labels_events_splits_and_raven_tables(tmp_path):
    (tmp_path / "raven.txt").write_text("Selection\tView\tBegin Time (s)\tEnd Time (s)\tAnnotation\n"
                                        "1\tWaveform 1\t1.0\t2.0\trumble\n1\tSpectrogram 1\t1.0\t2.0\trumble\n"
                                        "2\tSpectrogram 1\t5.5\t5.8\tgunshot\n")
    (tmp_path / "labels.csv").write_text("path,label,start,end,split,raven\n"
                                         "a.wav,dog;cat,,,train,\n"
                                         "b.wav,rumble,3,4,val,\n"
                                         "b.wav,gunshot,7,7.2,val,\n"
                                         "c.wav,,,,test,raven.txt\n"
                                         "d.wav,background,0,20,train,\n")
    table = load_csv(tmp_path / "labels.csv").set_index("filename")
    assert table.loc["a.wav", "primary_label"] == "dog" and table.loc["a.wav", "extra_labels"] == ["cat"]
    assert table.loc["b.wav", "events"] == [(3.0, 4.0, "rumble"), (7.0, 7.2, "gunshot")]
    assert table.loc["c.wav", "events"] == [(1.0, 2.0, "rumble"), (5.5, 5.8, "gunshot")]  # one row per view kept
    assert table.loc["d.wav", "primary_label"] == "background" and table.loc["d.wav", "events"] == []
    assert list(table["split"]) == ["train", "val", "test", "train"]
    parts = make_split(table.reset_index(), SimpleNamespace(split="kfold", n_folds=5, fold=0), seed=0)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [2, 1, 1]  # the csv's split column wins
    assert read_raven(tmp_path / "raven.txt")[0] == (1.0, 2.0, "rumble")
    (tmp_path / "bad.csv").write_text("path,label,split\na.wav,dog,holdout\n")
    with pytest.raises(DataSourceError, match="allowed: train, val, test"):
        load_csv(tmp_path / "bad.csv")


def test_holdout_split_is_grouped_stratified_and_seeded():
    table = pd.DataFrame({"primary_label": ["a"] * 40 + ["b"] * 20,
                          "group": [f"r{i // 2}" for i in range(60)]})  # two rows per recording
    split = holdout_assign(table, 0.6, 0.5, seed=3)
    assert (split == holdout_assign(table, 0.6, 0.5, seed=3)).all()
    for group, rows in table.assign(split=split).groupby("group"):
        assert rows["split"].nunique() == 1, group  # a recording never sits in two splits
    for label, n_groups in (("a", 20), ("b", 10)):
        counts = pd.Series(split[table["primary_label"] == label]).value_counts() / 2
        assert counts["train"] == round(0.6 * n_groups) and counts["val"] + counts["test"] == n_groups - counts["train"]


def test_chunks_cover_each_recording_and_keep_a_half_full_last_one():
    table = pd.DataFrame({"frames": [250, 320, 100, 30], "path": list("abcd")})
    chunks = cut_chunks(table, 100)
    assert chunks.groupby("path")["start"].apply(list).to_dict() == {
        "a": [0, 100, 200], "b": [0, 100, 200], "c": [0], "d": [0]}


def test_duration_outliers_and_downsampling():
    table = pd.DataFrame({"seconds": [3.0] * 18 + [0.5, 60.0], "path": [f"f{i}" for i in range(20)],
                          "primary_label": ["x"] * 15 + ["y"] * 5})
    kept, report = drop_duration_outliers(table, 0.05, 0.95)
    assert set(report["path"]) == {"f18", "f19"} and len(kept) == 18
    balanced = downsample_classes(table, seed=0)
    assert balanced["primary_label"].value_counts().to_dict() == {"x": 5, "y": 5}


def test_targets_per_task_and_event_targets_per_bin():
    table = pd.DataFrame({"primary_label": ["saw", "bird"], "extra_labels": [[], ["saw"]],
                          "secondary_labels": [[], []]})
    binary = make_targets(table, ["saw"], SimpleNamespace(task="binary"))
    assert binary.tolist() == [[1.0], [1.0]]
    onehot = make_targets(table, ["bird", "saw"], SimpleNamespace(task="multiclass"))
    assert onehot.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    # a 10-s window from t0 = 5 s in 10 bins of 1 s: an event 6.2-8.9 s covers bins 1..3 (>= half of each)
    y = event_targets([(6.2, 8.9, 1), (14.8, 15.1, 0)], t0=5.0, duration=10.0, n_classes=2, bins=10)
    assert np.flatnonzero(y[1]).tolist() == [1, 2, 3]
    assert np.flatnonzero(y[0]).tolist() == [9]  # a short event counts where it has half of itself


def test_events_from_frame_probabilities_and_event_based_f1_with_onset_tolerance():
    probs = np.zeros((2, 10))
    probs[0, 2:5] = 0.9
    probs[1, 7] = 0.6
    events = probs_to_events("f.wav", probs, ["rumble", "gunshot"], bin_s=1.0, threshold=0.5)
    assert [(e["class"], e["onset"], e["offset"]) for e in events] == [("rumble", 2.0, 5.0), ("gunshot", 7.0, 8.0)]
    reference = pd.DataFrame({"file": ["f.wav"] * 3, "class": ["rumble", "gunshot", "gunshot"],
                              "onset": [2.4, 9.0, 1.0], "offset": [5.0, 9.3, 1.3]})
    metrics = event_metrics(reference, pd.DataFrame(events), onset_tolerance_s=0.5)
    assert metrics["rumble"]["tp"] == 1 and metrics["gunshot"]["tp"] == 0  # 7.0 vs 9.0: outside the tolerance
    assert metrics["micro"] == {"tp": 1, "fp": 1, "fn": 2, "precision": 0.5, "recall": 0.3333, "f1": 0.4}
    assert event_metrics(reference, pd.DataFrame(events), onset_tolerance_s=2.0)["gunshot"]["tp"] == 1


def test_class_weights_match_the_standard_losses():
    targets = np.array([[1.0], [0.0], [0.0], [0.0]])
    assert class_weights(targets, "binary") == [3.0]  # negatives / positives
    logits, y = torch.tensor([[0.3], [-1.0], [2.0], [0.1]]), torch.from_numpy(targets).float()
    ours = create_loss("bce", class_weights=[3.0])(logits, y)
    assert ours.item() == pytest.approx(torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0]))(logits, y).item())
    onehot = torch.eye(3)[[0, 1, 2, 0]]
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    ce = create_loss("ce", class_weights=[1.0, 2.0, 3.0])(logits, onehot)
    reference = torch.nn.functional.cross_entropy(logits, onehot.argmax(1), weight=torch.tensor([1.0, 2.0, 3.0]))
    assert ce.item() == pytest.approx(reference.item(), rel=1e-5)


def test_folder_source_takes_any_format_rate_and_channel_count(tmp_path):
    import soundfile as sf

    from dataloader.audio import load_audio
    from dataloader.sources.local import load_folder

    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], axis=1).astype(np.float32) * 0.5
    (tmp_path / "car" / "sub").mkdir(parents=True)
    (tmp_path / "drone").mkdir()
    sf.write(tmp_path / "car" / "sub" / "a.flac", stereo, 44100)
    sf.write(tmp_path / "drone" / "b.ogg", stereo[:, 0], 44100)
    sf.write(tmp_path / "drone" / "c.wav", stereo[:22050], 22050)
    (tmp_path / "drone" / "notes.txt").write_text("not audio")
    table = load_folder(tmp_path)
    assert sorted(table["filename"]) == ["car/sub/a.flac", "drone/b.ogg", "drone/c.wav"]
    assert dict(zip(table["filename"], table["primary_label"]))["car/sub/a.flac"] == "car"
    audio = load_audio(tmp_path / "car" / "sub" / "a.flac", 16000)
    assert audio.ndim == 1 and abs(len(audio) - 16000) <= 1  # mono, resampled
    with pytest.raises(DataSourceError, match="no audio files"):
        load_folder(tmp_path / "car" / "sub")


def test_pseudo_labelled_windows_carry_the_teacher_probabilities_as_targets(tmp_path):
    from dataloader.curation import pseudo_label_rows

    (tmp_path / "pseudo.csv").write_text("row_id,asbfly,barswa\nsc1_5,0.9,0.2\nsc1_10,0.1,0.3\nsc2_5,0.2,0.7\n")
    rows = pseudo_label_rows(tmp_path / "pseudo.csv", tmp_path / "audio", window_s=5.0, min_prob=0.5)
    assert list(rows["start_s"]) == [0.0, 0.0] and list(rows["primary_label"]) == ["asbfly", "barswa"]
    assert rows["path"].tolist() == [str(tmp_path / "audio" / "sc1.ogg"), str(tmp_path / "audio" / "sc2.ogg")]
    real = pd.DataFrame({"primary_label": ["barswa"], "secondary_labels": [[]], "extra_labels": [[]]})
    data = SimpleNamespace(task="multilabel", secondary_label_weight=0.5, secondary_labels="weight")
    y = make_targets(pd.concat([real, rows], ignore_index=True), ["asbfly", "barswa", "zebfin"], data)
    np.testing.assert_allclose(y, [[0, 1, 0], [0.9, 0.2, 0], [0.2, 0.7, 0]], rtol=1e-6)


def test_label_tables_may_not_reach_outside_their_folder_and_errors_show_no_contents(tmp_path):
    from dataloader.sources.local import load_csv

    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "secret.txt").write_text("root:x:0:0:the first line\n")
    (data / "ok.wav").write_bytes(b"")
    rows = "path,label\nok.wav,a\n../secret.txt,b\n"
    (data / "labels.csv").write_text(rows)
    with pytest.raises(DataSourceError) as err:
        load_csv(data / "labels.csv", roots=[data])
    assert "line 3" in str(err.value) and "secret.txt" in str(err.value) and "allow_outside_paths" in str(err.value)
    (data / "labels.csv").write_text(f"path,label\n{tmp_path / 'secret.txt'},b\n")  # absolute
    with pytest.raises(DataSourceError, match="line 2"):
        load_csv(data / "labels.csv", roots=[data])
    assert len(load_csv(data / "labels.csv", roots=None)) == 1, "allowed when asked"
    (data / "labels.csv").write_text(f"path,raven\nok.wav,{tmp_path / 'secret.txt'}\n")
    with pytest.raises(DataSourceError, match="line 2"):
        load_csv(data / "labels.csv", roots=[data])
    (data / "raven.txt").write_text("root:x:0:0:the first line\n")
    (data / "labels.csv").write_text("path,raven\nok.wav,raven.txt\n")
    with pytest.raises(DataSourceError) as err:
        load_csv(data / "labels.csv", roots=[data])
    assert "root:x" not in str(err.value), "errors never print a file's contents"
