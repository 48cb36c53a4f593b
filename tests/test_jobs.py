"""The neighbouring jobs as config files: each runs end to end on a small synthetic dataset of its shape."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import train_classifier
from dataloader import job_demos

ROOT = Path(__file__).resolve().parents[1]


def run_job(config: str, data_dir: Path, work: Path, *extra: str) -> Path:
    """Train ``configs/<config>`` in testing mode on ``data_dir``; return the run folder."""
    overrides = [f"paths.data_dir={data_dir}", f"paths.cache_dir={work / 'cache'}", f"paths.runs_dir={work / 'runs'}",
                 "testing.testing=true", "testing.data_samples_for_testing=400", "testing.testing_epochs=2",
                 "data.num_workers=1", "trainer.batch_size=8", "model.transfer_learning=false", *extra]
    assert train_classifier.main(["--config", str(ROOT / "configs" / config),
                                  *[f"--set={o}" for o in overrides]]) == 0
    return max((work / "runs").iterdir(), key=lambda p: p.stat().st_mtime)


def test_multiclass_folder_job_writes_seed_004_artifacts_split_files_and_resets(tmp_path):
    data = job_demos.multiclass_dataset(tmp_path / "dcs", per_class=7)
    run = run_job("multiclass_drone_car_speech.ini", data, tmp_path, "trainer.overfit_batch=25")
    for name in ("checkpoints/best.pt", "pred_labels.npy", "true_labels.npy", "val_confusion_matrix.png",
                 "val_report.txt", "test_report.txt", "test_confusion_matrix.png", "split/train.csv",
                 "split/val.csv", "split/test.csv", "split/split_counts.json"):
        assert (run / name).is_file(), name
    report = (run / "val_report.txt").read_text()
    assert all(word in report for word in ("drone", "car", "speech", "macro avg", "weighted avg", "support"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "multiclass" and summary["data_source"] == "folder"
    pred, true = np.load(run / "pred_labels.npy"), np.load(run / "true_labels.npy")
    assert pred.shape == true.shape == (summary["n_val"],)
    # 2-s chunks: more examples than recordings; a recording's chunks never straddle two splits
    counts = json.loads((run / "split" / "split_counts.json").read_text())
    assert summary["n_train"] > sum(counts["train"].values())
    groups = {name: set(pd.read_csv(run / "split" / f"{name}.csv")["group"]) for name in ("train", "val", "test")}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert set(counts["train"]) == {"drone", "car", "speech"}
    cache = Path(summary["cache"])
    assert any((cache / "splits").iterdir())
    assert train_classifier.main(["--config", str(ROOT / "configs" / "multiclass_drone_car_speech.ini"), "--reset",
                                  f"--set=paths.cache_dir={tmp_path / 'cache'}"]) == 0
    assert not cache.exists()


def test_overfit_check_fails_a_run_that_cannot_learn(tmp_path):
    data = job_demos.multiclass_dataset(tmp_path / "dcs", per_class=4)
    with pytest.raises(RuntimeError, match="overfit_batch"):
        run_job("multiclass_drone_car_speech.ini", data, tmp_path, "trainer.overfit_batch=1")


def test_binary_job_filters_outliers_balances_and_reports_test_metrics(tmp_path, capsys):
    data = job_demos.binary_dataset(tmp_path / "saw", per_class=12)
    run = run_job("binary_chainsaw.ini", data, tmp_path)
    skipped = pd.read_csv(run / "skipped_files.csv")
    reasons = dict(zip(skipped["path"].map(lambda p: Path(p).name), skipped["reason"]))
    assert reasons["empty.wav"] == "zero-length audio"
    assert any(r.startswith("duration outlier") for name, r in reasons.items() if name.startswith("overlong"))
    counts = json.loads((run / "split" / "split_counts.json").read_text())
    assert counts["train"]["chainsaw"] == counts["train"]["no_chainsaw"]  # balance = downsample
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert {"accuracy", "precision", "recall", "f1", "roc_auc"} <= set(metrics)
    assert (run / "test_confusion_matrix.png").is_file()
    capsys.readouterr()
    assert train_classifier.main(["--config", str(ROOT / "configs" / "binary_chainsaw.ini"), "--stage", "benchmark",
                                  "--benchmark-steps", "2", f"--set=paths.data_dir={data}",
                                  f"--set=paths.cache_dir={tmp_path / 'cache'}",
                                  f"--set=paths.runs_dir={tmp_path / 'runs'}", "--set=testing.testing=true",
                                  "--set=model.transfer_learning=false", "--set=trainer.batch_size=4"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("{"))
    bench = json.loads(line)
    assert bench["seconds_per_step"] > 0 and bench["seconds_per_epoch"] > 0 and bench["seconds_for_run"] > 0


def test_events_job_from_csv_and_raven_tables_writes_an_event_table_and_event_f1(tmp_path):
    data = job_demos.events_dataset(tmp_path / "ele", clips=12)
    run = run_job("events_elephant.ini", data, tmp_path, f"data.labels_csv={data / 'labels.csv'}")
    events = pd.read_csv(run / "val_events.csv")
    assert list(events.columns) == ["file", "class", "onset", "offset", "score"]
    metrics = json.loads((run / "val_event_metrics.json").read_text())
    assert {"micro", "onset_tolerance_s"} <= set(metrics) and 0.0 <= metrics["micro"]["f1"] <= 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "events" and "event_f1" in summary["val_metrics"]
    payload = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert payload["classes"] == ["gunshot", "rumble"]  # background is not a class
    assert len(payload["labels"]) == 2 * 10  # outputs: class x event_bins


def test_tiny_job_trains_a_small_model_and_exports_int8_and_c_headers(tmp_path):
    from factory.models import create_model
    from factory.tiny import count_parameters
    from inference.microcontroller import build

    assert count_parameters(create_model("tiny_dscnn", num_classes=1)) <= 20_000
    data = job_demos.tiny_dataset(tmp_path / "tiny", per_class=10)
    run = run_job("tiny_bird_detector.ini", data, tmp_path)
    assert json.loads((run / "summary.json").read_text())["model"] == "tiny_dscnn"
    reports = {r["variant"]: r for r in build(run / "checkpoints" / "best.pt", tmp_path / "mcu", qat_epochs=1)}
    assert set(reports) == {"fp32", "int8_ptq", "qat_fp32", "int8_qat"}
    for name in ("int8_ptq", "int8_qat"):
        assert reports[name]["weight_bytes"] < reports["fp32"]["weight_bytes"] / 2
        assert reports[name]["latency_ms_per_window"] > 0 and 0.0 <= reports[name]["accuracy"] <= 1.0
    header = (tmp_path / "mcu" / "mel_filters.h").read_text()
    assert "#define N_MELS 40" in header and "#define SAMPLE_RATE 8000" in header
    model_h = (tmp_path / "mcu" / "model.h").read_text()
    assert f"model_onnx_len = {(tmp_path / 'mcu' / 'model_int8_qat.onnx').stat().st_size};" in model_h
    if shutil.which("gcc"):  # the headers are valid C
        (tmp_path / "mcu" / "main.c").write_text('#include "model.h"\n#include "mel_filters.h"\n'
                                                 "int main(void) { return model_onnx[0] + (int)(mel_filters[0][0] + mel_offset[0]"
                                                 " + mel_scale[0]); }\n")
        subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(tmp_path / "mcu" / "main"),
                        str(tmp_path / "mcu" / "main.c")], check=True)


def test_small_dataset_config_cross_validates_every_fold_of_a_csv_fold_column_with_mean_and_std(tmp_path, capsys):
    import json

    import pandas as pd

    data = job_demos.multiclass_dataset(tmp_path / "dcs", per_class=6)
    files = sorted(p.relative_to(data) for p in data.rglob("*.wav"))
    table = pd.DataFrame({"path": [str(f) for f in files], "label": [f.parts[0] for f in files]})
    table["fold"] = [i % 3 for i in range(len(table))]  # the user's own folds, 0..2
    table.to_csv(data / "labels.csv", index=False)
    work = tmp_path / "work"
    args = ["--config", str(ROOT / "configs" / "small_dataset.ini"), "--cv",
            f"--set=paths.data_dir={data}", "--set=data.source=csv", f"--set=data.labels_csv={data / 'labels.csv'}",
            "--set=data.split=kfold", f"--set=paths.cache_dir={work / 'cache'}",
            f"--set=paths.runs_dir={work / 'runs'}", "--set=trainer.n_epochs=1", "--set=model.type=tiny_dscnn",
            "--set=model.transfer_learning=false", "--set=trainer.precise_bn_batches=2"]
    assert train_classifier.main(args) == 0
    (cv,) = (work / "runs").glob("cv-*")
    assert (cv / "cv_curves.png").stat().st_size > 0
    folds = pd.read_csv(cv / "cv_folds.csv")
    assert folds["fold"].tolist() == [0, 1, 2] and folds["run"].nunique() == 3
    summary = json.loads((cv / "cv_summary.json").read_text())["scores"]
    accuracy = folds["val_accuracy"]
    assert summary["val_accuracy"]["mean"] == pytest.approx(accuracy.mean(), abs=1e-6)
    assert summary["val_accuracy"]["std"] == pytest.approx(accuracy.std(ddof=1), abs=1e-6)
    assert summary["val_accuracy"]["n"] == 3 and "val_macro_f1" in summary
    assert "± " in capsys.readouterr().out
    # --cv --stage benchmark: one fold timed (validation and precise BN included), every fold projected
    assert train_classifier.main(args + ["--stage", "benchmark", "--benchmark-steps", "1"]) == 0
    bench = json.loads(next(x for x in capsys.readouterr().out.splitlines() if x.startswith("{")))
    assert bench["folds"] == 3 and bench["minutes_for_cv"] == pytest.approx(3 * bench["minutes_for_run"], abs=0.02)
    assert bench["seconds_precise_bn_per_epoch"] > 0 and bench["seconds_validation_per_epoch"] > 0
    assert len(list((work / "runs").glob("cv-*"))) == 1  # a benchmark writes no cross-validation table


def test_job_demos_command_writes_the_size_asked_for(tmp_path):
    assert job_demos.main(["tiny", str(tmp_path / "t"), "--size", "3"]) == 0
    assert sorted(len(list((tmp_path / "t" / c).iterdir())) for c in ("bird", "not_bird")) == [3, 3]
