"""Callbacks: checkpoints keep the best, metrics.csv is always written, Neptune never breaks a run."""
from __future__ import annotations

import logging

import pandas as pd
import pytest

from training.callbacks import CSVLogger, EarlyStopping, MLflowLogger, ModelCheckpoint, NeptuneLogger
from utils.checkpoints import load_checkpoint


class FakeTrainer:
    history: list = []
    stop_training = False

    def checkpoint_payload(self, epoch, metrics):
        return {"epoch": epoch, "metrics": dict(metrics)}


def feed(callback, scores):
    trainer = FakeTrainer()
    trainer.history = []
    callback.on_train_start(trainer)
    for epoch, score in enumerate(scores, 1):
        callback.on_epoch_end(trainer, epoch, {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1 - score,
                                               "val_score": score, "lr": 1e-3, "seconds": 1.0})
        if trainer.stop_training:
            return epoch
    callback.on_train_end(trainer)
    return len(scores)


def test_checkpoint_keeps_the_best_and_the_last(tmp_path):
    cb = ModelCheckpoint(tmp_path, monitor="val_score")
    feed(cb, [0.5, 0.8, 0.7])
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    assert not list(tmp_path.glob("*.tmp*"))


def test_checkpoint_on_loss_keeps_the_lowest(tmp_path):
    cb = ModelCheckpoint(tmp_path, monitor="val_loss")
    feed(cb, [0.5, 0.8, 0.7])  # val_loss = 1 - score: lowest at epoch 2
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2


def test_csv_logger_writes_every_epoch_and_a_plot(tmp_path):
    feed(CSVLogger(tmp_path), [0.5, 0.8])
    assert pd.read_csv(tmp_path / "metrics.csv")["val_score"].tolist() == [0.5, 0.8]
    assert (tmp_path / "training_curves.png").stat().st_size > 1000


def test_neptune_offline_logs_to_the_run_folder_without_network_or_token(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    logger = NeptuneLogger("", "async", tmp_path, {"trainer": {"seed": 1}})
    feed(logger, [0.5])
    assert list((tmp_path / ".neptune").rglob("*")), "async without a token falls back to offline files"
    assert "Neptune logger off" not in caplog.text


def test_neptune_debug_mode_runs_without_network(tmp_path, caplog):
    feed(NeptuneLogger("ws/proj", "debug", tmp_path, {"a": 1}), [0.5, 0.6])
    assert "Neptune logger off" not in caplog.text


def test_a_failing_neptune_turns_itself_off_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    import neptune

    def refuse(**_):
        raise ConnectionError("service unreachable")

    monkeypatch.setattr(neptune, "init_run", refuse)
    with caplog.at_level(logging.WARNING):
        feed(NeptuneLogger("ws/proj", "offline", tmp_path, {}), [0.5, 0.6])
    assert "Neptune logger off" in caplog.text
    assert caplog.text.count("Neptune logger off") == 1


def test_top_k_keeps_the_k_best_epochs(tmp_path):
    cb = ModelCheckpoint(tmp_path, monitor="val_score", top_k=2)
    feed(cb, [0.5, 0.8, 0.6, 0.9, 0.7])
    assert sorted(p.name for p in (tmp_path / "top").iterdir()) == ["epoch002.pt", "epoch004.pt"]
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 4


def test_early_stopping_ends_training_after_patience_epochs_without_progress():
    assert feed(EarlyStopping("val_score", patience=2), [0.5, 0.8, 0.7, 0.79, 0.95]) == 4
    assert feed(EarlyStopping("val_loss", patience=3), [0.5, 0.6, 0.7, 0.8]) == 4  # loss keeps falling: no stop


def test_mlflow_logs_params_metrics_and_curves_to_a_local_store(tmp_path, caplog):
    mlflow = pytest.importorskip("mlflow")
    run_folder = tmp_path / "runs" / "r1"
    run_folder.mkdir(parents=True)
    logger = MLflowLogger("", "birdclef-test", run_folder, {"trainer": {"seed": 1}, "model": {"type": "x"}}, "r1")
    feed(CSVLogger(run_folder), [0.5, 0.7])
    feed(logger, [0.5, 0.7])
    assert "MLflow logger off" not in caplog.text
    client = mlflow.tracking.MlflowClient((tmp_path / "runs" / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("birdclef-test").experiment_id])
    assert run.data.params["trainer.seed"] == "1" and run.data.metrics["val_score"] == 0.7
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_score")] == [0.5, 0.7]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.csv", "training_curves.png"}


def test_an_unreachable_mlflow_server_turns_the_logger_off_and_the_run_goes_on(tmp_path, caplog, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with caplog.at_level(logging.WARNING):
        feed(MLflowLogger("http://127.0.0.1:9", "x", tmp_path, {}), [0.5, 0.6])
    assert caplog.text.count("MLflow logger off") == 1


def test_an_unreachable_neptune_service_falls_back_to_offline_with_one_warning(tmp_path, monkeypatch, caplog):
    import neptune

    real = neptune.init_run
    modes = []

    def unreachable(**kw):
        modes.append(kw["mode"])
        if kw["mode"] == "async":
            raise ConnectionError("api.neptune.ai unreachable")
        return real(**kw)

    monkeypatch.setenv("NEPTUNE_API_TOKEN", "a-token-from-the-environment")
    monkeypatch.setattr(neptune, "init_run", unreachable)
    with caplog.at_level(logging.WARNING):
        feed(NeptuneLogger("ws/proj", "async", tmp_path, {"a": 1}), [0.5, 0.6])
    assert modes == ["async", "offline"] and caplog.text.count("Neptune unreachable") == 1
    assert "Neptune logger off" not in caplog.text and list((tmp_path / ".neptune").rglob("*"))


def test_a_saturated_score_keeps_the_epoch_with_the_lowest_validation_loss(tmp_path):
    """ROC-AUC reaches 1.0 early on easy data; the first epoch that reaches it is still uncalibrated."""
    from utils.metrics import epoch_rank

    trainer = FakeTrainer()
    trainer.history = []
    cb, stop = ModelCheckpoint(tmp_path, monitor="val_score"), EarlyStopping("val_score", patience=2)
    for callback in (cb, stop):
        callback.on_train_start(trainer)
    for epoch, loss in enumerate([0.9, 0.6, 0.3, 0.2], 1):
        metrics = {"epoch": epoch, "val_loss": loss, "val_score": 1.0 if epoch > 1 else 0.7}
        for callback in (cb, stop):
            callback.on_epoch_end(trainer, epoch, metrics)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 4 and not trainer.stop_training
    assert epoch_rank({"val_score": 1.0, "val_loss": 0.2}, "val_score") > epoch_rank(
        {"val_score": 1.0, "val_loss": 0.3}, "val_score") > epoch_rank({"val_score": 0.9, "val_loss": 0.0}, "val_score")
    assert epoch_rank({"val_score": float("nan"), "val_loss": 0.1}, "val_score") is None


def test_runs_started_together_never_share_a_folder(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    from training.run_folder import create_run_dir

    with ProcessPoolExecutor(max_workers=8) as pool:
        folders = list(pool.map(create_run_dir, [tmp_path] * 100, ["20261201-000000-model"] * 100))
    assert len(set(folders)) == 100 and all(f.is_dir() for f in folders)


def test_a_new_run_removes_the_temporary_checkpoints_of_killed_runs(tmp_path):
    import os

    from training.run_folder import create_run_dir

    folder = tmp_path / "old-run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.pt.tmp-999999999").write_bytes(b"")  # a kill -9 during a write: the process is gone
    (folder / f"best.pt.tmp-{os.getpid()}").write_bytes(b"x")  # a live writer's: kept
    create_run_dir(tmp_path, "new-run")
    assert sorted(p.name for p in folder.iterdir()) == [f"best.pt.tmp-{os.getpid()}"]


def test_monitoring_the_epoch_keeps_the_last_epoch_without_selecting_on_validation(tmp_path):
    from utils.metrics import epoch_rank

    history = [{"epoch": 1, "val_score": 0.9, "val_loss": 0.1}, {"epoch": 2, "val_score": 0.5, "val_loss": 0.9}]
    assert max(history, key=lambda m: epoch_rank(m, "epoch"))["epoch"] == 2
    from training.config import load_config

    assert load_config(None, ["callbacks.model_checkpoint_type=epoch"]).callbacks.model_checkpoint_type == "epoch"
