"""Trainer callbacks: local metrics log (always on), checkpoints, early stopping, and Neptune and MLflow
loggers that never break a run."""
from __future__ import annotations

import abc
import csv
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from utils.checkpoints import save_checkpoint
from utils.config_schema import Config
from utils.metrics import epoch_rank

log = logging.getLogger(__name__)


class Trainer(Protocol):
    """What a callback reads of the trainer calling it (:class:`training.trainer.Trainer` is one): callbacks
    depend on this, not on the training loop's module."""

    history: list[dict[str, float]]
    stop_training: bool

    def checkpoint_payload(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """The checkpoint of ``epoch`` as plain data."""


class Callback:
    """Hooks called by :class:`training.trainer.Trainer`; every method is optional."""

    def on_train_start(self, trainer: "Trainer") -> None:
        """Before the first epoch (no-op by default)."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None:
        """After each epoch's validation, with that epoch's metrics (no-op by default)."""

    def on_train_end(self, trainer: "Trainer") -> None:
        """After the last epoch (no-op by default)."""


class CSVLogger(Callback):
    """``metrics.csv`` (one row per epoch) and ``training_curves.png`` in the run folder."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / "metrics.csv"
        self.rows: list[dict[str, float]] = []

    def on_train_start(self, trainer: "Trainer") -> None:
        self.rows = []
        for metrics in trainer.history:  # a resumed run starts with the epochs it already trained
            self.on_epoch_end(trainer, int(metrics["epoch"]), metrics)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None:
        self.rows.append(metrics)
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(metrics))
            if new:
                writer.writeheader()
            writer.writerow(metrics)

    def on_train_end(self, trainer: "Trainer") -> None:
        if not self.rows:
            return
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415

        epochs = [r["epoch"] for r in self.rows]
        fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 3.5))
        for key in ("train_loss", "val_loss"):
            ax_loss.plot(epochs, [r[key] for r in self.rows], marker="o", label=key)
        ax_loss.set_xlabel("epoch"), ax_loss.set_title("loss"), ax_loss.legend()
        ax_score.plot(epochs, [r["val_score"] for r in self.rows], marker="o", color="tab:green")
        ax_score.set_xlabel("epoch"), ax_score.set_title("validation score (macro ROC-AUC)")
        fig.tight_layout()
        fig.savefig(self.path.with_name("training_curves.png"), dpi=100)
        plt.close(fig)


def _better(rank: Optional[tuple[float, float]], best: Optional[tuple[float, float]]) -> bool:
    """``rank`` (see :func:`utils.metrics.epoch_rank`) beats ``best``; a NaN epoch (None) never does."""
    return rank is not None and (best is None or rank > best)


class ModelCheckpoint(Callback):
    """``last.pt`` every epoch, ``best.pt`` when the monitored metric improves, and with ``top_k`` > 1 the k best
    epochs as ``top/epoch<N>.pt`` (atomic writes; a resumed run continues from its history)."""

    def __init__(self, folder: str | Path, monitor: str = "val_score", verbose: bool = True, top_k: int = 1):
        self.folder = Path(folder)
        self.monitor = monitor
        self.verbose, self.top_k = verbose, top_k
        self.best: Optional[tuple[float, float]] = None  # epoch_rank of the best epoch
        self.best_path = self.folder / "best.pt"
        self.last_path = self.folder / "last.pt"
        self.top: list[tuple[tuple[float, float], int]] = []  # (rank, epoch), best first

    def on_train_start(self, trainer: "Trainer") -> None:
        for h in trainer.history:
            if _better(epoch_rank(h, self.monitor), self.best):
                self.best = epoch_rank(h, self.monitor)
        if self.top_k > 1:
            self.top = self._rank([(epoch_rank(h, self.monitor), int(h["epoch"])) for h in trainer.history
                                   if (self.folder / "top" / f"epoch{int(h['epoch']):03d}.pt").is_file()])

    @staticmethod
    def _rank(items: list) -> list:
        return sorted((it for it in items if it[0] is not None), key=lambda it: it[0], reverse=True)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None:
        payload = trainer.checkpoint_payload(epoch, metrics)
        save_checkpoint(self.last_path, payload)
        value, rank = metrics[self.monitor], epoch_rank(metrics, self.monitor)
        if _better(rank, self.best):
            self.best = rank
            save_checkpoint(self.best_path, payload)
            if self.verbose:
                log.info("checkpoint: new best %s = %.4f at epoch %d -> %s", self.monitor, value, epoch,
                         self.best_path)
        if self.top_k > 1:
            ranked = self._rank(self.top + [(rank, epoch)])
            if (rank, epoch) in ranked[:self.top_k]:
                save_checkpoint(self.folder / "top" / f"epoch{epoch:03d}.pt", payload)
            for _, dropped in ranked[self.top_k:]:
                (self.folder / "top" / f"epoch{dropped:03d}.pt").unlink(missing_ok=True)
            self.top = ranked[:self.top_k]


class EarlyStopping(Callback):
    """Ends training when the monitored metric has not improved for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_score", patience: int = 5):
        self.monitor, self.patience = monitor, patience
        self.best: Optional[tuple[float, float]] = None  # epoch_rank of the best epoch so far
        self.best_value = float("nan")
        self.waited = 0

    def on_train_start(self, trainer: "Trainer") -> None:
        for h in trainer.history:  # a resumed run counts the epochs it already waited
            self._update(h)

    def _update(self, metrics: dict[str, float]) -> None:
        rank = epoch_rank(metrics, self.monitor)
        if _better(rank, self.best):
            self.best, self.best_value, self.waited = rank, metrics[self.monitor], 0
        else:
            self.waited += 1

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None:
        self._update(metrics)
        if self.waited >= self.patience:
            log.info("early stopping: %s has not improved for %d epochs (best %.4f)", self.monitor, self.waited,
                     self.best_value)
            trainer.stop_training = True


class TrackerCallback(Callback, abc.ABC):
    """An external tracker that must never break training: :meth:`start` returns the tracker's client,
    :meth:`log` and :meth:`finish` use it; the first failure of any of them turns the tracker off with one
    warning and the run goes on with the local logs."""

    tracker = "tracker"

    def __init__(self) -> None:
        self.client: Any = None

    @abc.abstractmethod
    def start(self) -> Any:
        """Connect; return the client."""

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        """Send one epoch's metrics."""

    def finish(self) -> None:
        """Upload what is left and close."""

    def _guarded(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a tracker must never break training
            log.warning("%s logger off (%s failed: %s); the run goes on with the local logs", self.tracker, what, exc)
            self.client = None
            return None

    def on_train_start(self, trainer: "Trainer") -> None:
        self.client = self._guarded("start", self.start)

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict[str, float]) -> None:
        if self.client is not None:
            self._guarded("logging", lambda: self.log(epoch, metrics))

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.client is not None:
            self._guarded("closing", self.finish)


class NeptuneLogger(TrackerCallback):
    """Logs config and per-epoch metrics to Neptune; any failure turns it off with one warning.

    The token comes only from ``NEPTUNE_API_TOKEN``.  Without it, ``async``/``sync`` fall back to
    ``offline`` (files under the run folder), and so does an unreachable service, so the run goes on.
    """

    tracker = "Neptune"

    def __init__(self, project: str, mode: str, folder: str | Path, config: dict[str, Any], name: str = ""):
        super().__init__()
        self.project, self.mode, self.folder, self.config, self.name = project, mode, Path(folder), config, name

    def start(self) -> Any:
        mode = self.mode
        if mode in ("async", "sync") and not os.environ.get("NEPTUNE_API_TOKEN"):
            log.warning("NEPTUNE_API_TOKEN is not set: Neptune logs offline to %s", self.folder / ".neptune")
            mode = "offline"
        os.environ["NEPTUNE_DATA_DIRECTORY"] = str(self.folder / ".neptune")  # offline files stay with the run
        import neptune  # noqa: PLC0415 - slow import, only when the logger is on
        from neptune.utils import stringify_unsupported  # noqa: PLC0415

        def init(run_mode: str) -> Any:
            return neptune.init_run(project=self.project or None, mode=run_mode, name=self.name or None,
                                    capture_hardware_metrics=False, capture_stdout=False,
                                    capture_stderr=False, git_ref=False)

        try:
            run = init(mode)
        except Exception as exc:  # noqa: BLE001 - the service may be unreachable: keep the logs locally
            if mode not in ("async", "sync"):
                raise
            log.warning("Neptune unreachable (%s): logging offline to %s", exc, self.folder / ".neptune")
            run = init("offline")
        run["config"] = stringify_unsupported(self.config)
        return run

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if key != "epoch":
                self.client[f"train/{key}"].append(value, step=epoch)

    def finish(self) -> None:
        self.client.stop()


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class MLflowLogger(TrackerCallback):
    """Logs the config (as params), per-epoch metrics and, at the end, ``metrics.csv``/``training_curves.png``
    to MLflow: the maintained, self-hostable tracker. ``tracking_uri`` empty = a local store under the runs
    folder (MLflow's file store, which it keeps in maintenance mode: for a shared server give its
    ``http://`` URI). Any failure turns the logger off with one warning; the run goes on."""

    tracker = "MLflow"

    def __init__(self, tracking_uri: str, experiment: str, folder: str | Path, config: dict[str, Any],
                 name: str = "", local_store: Optional[Path] = None):
        super().__init__()
        self.tracking_uri, self.experiment, self.folder = tracking_uri, experiment, Path(folder)
        self.config, self.name = config, name
        self.local_store = local_store or self.folder.parent / "mlruns"

    def start(self) -> Any:
        if not self.tracking_uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        import mlflow  # noqa: PLC0415 - only when the logger is on

        mlflow.set_tracking_uri(self.tracking_uri or self.local_store.resolve().as_uri())
        mlflow.set_experiment(self.experiment)
        mlflow.start_run(run_name=self.name or None)
        params = {k: str(v)[:500] for k, v in _flatten(self.config).items()}
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            mlflow.log_params(dict(list(params.items())[i:i + 100]))
        return mlflow

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        self.client.log_metrics({k: float(v) for k, v in metrics.items() if k != "epoch" and v == v},
                                step=epoch)  # NaN is not logged

    def finish(self) -> None:
        for name in ("metrics.csv", "training_curves.png"):
            if (self.folder / name).is_file():
                self.client.log_artifact(str(self.folder / name))
        self.client.end_run()


def build_callbacks(cfg: Config, run_dir: Path, is_main: bool = True
                    ) -> tuple[list[Callback], Optional[ModelCheckpoint]]:
    """The run's callbacks from ``[callbacks]`` and ``[trainer]`` (CSV log, checkpoints, early stopping, MLflow,
    Neptune) and its checkpoint callback (None when ``model_checkpoint`` is off); none on ranks other than 0."""
    if not is_main:
        return [], None
    monitor, cb = cfg.callbacks.model_checkpoint_type, cfg.callbacks
    callbacks: list[Callback] = [CSVLogger(run_dir)]
    checkpoint = (ModelCheckpoint(run_dir / "checkpoints", monitor, cb.model_checkpoint_verbose,
                                  top_k=cb.checkpoint_top_k) if cb.model_checkpoint else None)
    if checkpoint:
        callbacks.append(checkpoint)
    if cfg.trainer.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor, cfg.trainer.early_stopping_patience))
    if cb.mlflow_logger:
        callbacks.append(MLflowLogger(cb.mlflow_tracking_uri, cb.mlflow_experiment, run_dir, cfg.to_dict(),
                                      name=run_dir.name))
    if cb.neptune_logger:
        callbacks.append(NeptuneLogger(cb.neptune_project, cb.neptune_mode, run_dir, cfg.to_dict(), name=run_dir.name))
    return callbacks, checkpoint
