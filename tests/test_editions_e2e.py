"""End to end in testing mode on the demo of each later BirdCLEF edition: the run trains, validates on focal
recordings and (2026) on held-out labelled soundscapes, and writes a submission with exactly that edition's
sample_submission.csv columns."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import train_classifier
from inference.submission import validate_submission
from utils.metrics import epoch_rank


def run_edition(demo, work, edition, *extra):
    overrides = [f"paths.demo_dir={demo}", f"paths.data_dir={work / 'no-kaggle-data'}",
                 f"paths.cache_dir={work / 'cache'}", f"paths.runs_dir={work / 'runs'}",
                 f"paths.submissions_dir={work / 'submissions'}", "testing.testing=true",
                 "testing.data_samples_for_testing=24", "testing.testing_epochs=1", "data.num_workers=1",
                 "data.demo_seed=7", "data.demo_scale=0.15", f"data.demo_edition={edition}",
                 "model.transfer_learning=false", "trainer.batch_size=8", *extra]
    code = train_classifier.main(["--set=" + o for o in overrides])
    runs = sorted((work / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return code, runs[-1]


@pytest.mark.parametrize("edition", ["2025", "2026"])
def test_a_testing_run_per_edition_submits_that_editions_columns(edition_demos, tmp_path, edition):
    demo = edition_demos[edition]
    code, run_dir = run_edition(demo, tmp_path, edition)
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    columns = list(pd.read_csv(demo / "sample_submission.csv", nrows=0, dtype=str).columns)[1:]
    submission = pd.read_csv(summary["submission"])
    validate_submission(submission, columns)
    assert summary["data_source"] == f"demo-{edition}" and summary["classes"] == len(columns)
    assert 0.0 <= summary["val_score"] <= 1.0 and 0.0 <= summary["soundscape_score"] <= 1.0
    outside = int(pd.read_csv(demo / "train.csv")["secondary_labels"].str.contains("grekis1").sum())
    assert outside and summary["unknown_secondary_labels"] == {"grekis1": outside}, "counted, never silently dropped"
    if edition == "2026":
        assert summary["soundscape_windows_train"] > 0 and summary["n_soundscape_val"] > 0
        assert 0.0 <= summary["soundscape_val_score"] <= 1.0
        assert "soundscape_val_score" in pd.read_csv(run_dir / "metrics.csv").columns
        thresholds = pd.read_csv(run_dir / "thresholds.csv")  # the soundscape windows were scored for them too
        assert len(thresholds) == summary["classes"] and thresholds["source"].notna().all()
        assert len(summary["classes_only_in_soundscapes"]) == 2
        assert summary["n_train"] > 24 - summary["n_val"], "soundscape windows train too"
        scapes = pd.read_csv(run_dir / "soundscapes.csv", dtype=str)
        assert scapes["site"].str.fullmatch(r"S\d\d").all() and scapes["hour"].notna().all()
    else:
        assert summary["soundscape_val_score"] is None and "soundscape_windows_train" not in summary


def test_soundscape_windows_that_all_validate_leave_classes_without_training_examples(edition_demos, tmp_path):
    code, run_dir = run_edition(edition_demos["2026"], tmp_path, "2026", "data.soundscape_labels=val",
                                "callbacks.model_checkpoint_type=soundscape_val_score")
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    only = set(summary["classes_only_in_soundscapes"])
    assert summary["soundscape_windows_train"] == 0 and summary["n_soundscape_val"] > 0
    assert summary["checkpoint"], "the soundscape score picks the checkpoint"
    assert only <= set(summary["untrained_classes"]) and summary["classes_without_training_examples"] >= 2


def test_monitoring_the_soundscape_score_without_soundscape_windows_stops_with_a_message(edition_demos, tmp_path,
                                                                                        caplog):
    code, _ = run_edition(edition_demos["2026"], tmp_path, "2026", "data.soundscape_labels=off",
                          "callbacks.model_checkpoint_type=soundscape_val_score")
    assert code == 2 and "no labelled soundscape windows validate" in caplog.text


def test_the_soundscape_monitor_breaks_ties_by_its_own_loss():
    a = {"val_score": 0.9, "val_loss": 0.1, "soundscape_val_score": 0.8, "soundscape_val_loss": 0.5}
    b = {"val_score": 0.7, "val_loss": 0.9, "soundscape_val_score": 0.8, "soundscape_val_loss": 0.3}
    assert epoch_rank(b, "soundscape_val_score") > epoch_rank(a, "soundscape_val_score")
    assert epoch_rank(a, "val_score") > epoch_rank(b, "val_score")
