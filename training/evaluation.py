"""Held-out evaluation per task, written into the run folder: reports, metrics JSON, confusion matrices.

``multiclass`` (seed 004's artifacts): ``pred_labels.npy``, ``true_labels.npy``, ``<split>_report.txt``
(per-class precision / recall / F1 / support, macro and weighted averages) and ``<split>_confusion_matrix.png``;
``binary`` (seed 000): accuracy, precision, recall, F1 and ROC-AUC in ``<split>_metrics.json`` plus the report
and the confusion matrix; ``multilabel``: the validation metrics of training in ``<split>_metrics.json``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from inference.submission import row_id
from utils.config_schema import DataConfig, EvaluationConfig
from utils.events import EVENT_COLUMNS, event_metrics, probs_to_events, reference_events
from utils.metrics import per_class_table, plot_per_class, validation_scores
from utils.tasks import Task, get_task

if TYPE_CHECKING:
    from training.trainer import Trainer

log = logging.getLogger(__name__)


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: str | Path, title: str) -> None:
    """A confusion matrix as a PNG: counts in each cell, rows = truth, columns = prediction."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (r, c), n in np.ndenumerate(matrix):
        ax.text(c, r, str(n), ha="center", va="center", color="white" if n > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(task: Task, split: str, probs: np.ndarray, targets: np.ndarray, labels: Sequence[str],
             run_dir: str | Path, threshold: float = 0.5) -> dict[str, Any]:
    """Write the artifacts of ``split`` (``val`` or ``test``) for ``task``; return its metrics."""
    run_dir = Path(run_dir)
    if task.one_label:
        truth, pred = targets.argmax(axis=1), probs.argmax(axis=1)
        names = list(labels)
        if split == "val":  # seed 004's file names
            np.save(run_dir / "pred_labels.npy", pred)
            np.save(run_dir / "true_labels.npy", truth)
        else:
            np.save(run_dir / f"{split}_pred_labels.npy", pred)
            np.save(run_dir / f"{split}_true_labels.npy", truth)
        metrics = {"accuracy": accuracy_score(truth, pred),
                   "macro_f1": f1_score(truth, pred, average="macro", labels=range(len(names)), zero_division=0)}
    elif task.single_output:
        truth, score = targets[:, 0].astype(int), probs[:, 0]
        pred = (score >= threshold).astype(int)
        names = [f"not {labels[0]}", labels[0]]
        metrics = {"accuracy": accuracy_score(truth, pred),
                   "precision": precision_score(truth, pred, zero_division=0),
                   "recall": recall_score(truth, pred, zero_division=0),
                   "f1": f1_score(truth, pred, zero_division=0),
                   "roc_auc": roc_auc_score(truth, score) if len(set(truth)) == 2 else float("nan"),
                   "threshold": threshold}
    else:
        metrics = {k.removeprefix("val_"): v for k, v in validation_scores(targets, probs, labels).items()}
        metrics["examples"] = len(targets)
        (run_dir / f"{split}_metrics.json").write_text(json.dumps(metrics, indent=1))
        return metrics
    report = classification_report(truth, pred, labels=range(len(names)), target_names=names, digits=4,
                                   zero_division=0)
    (run_dir / f"{split}_report.txt").write_text(report)
    matrix = confusion_matrix(truth, pred, labels=range(len(names)))
    plot_confusion_matrix(matrix, names, run_dir / f"{split}_confusion_matrix.png",
                          f"{split}: {len(truth)} examples, accuracy {metrics['accuracy']:.3f}")
    metrics = {k: round(float(v), 6) for k, v in metrics.items()}
    metrics["examples"] = int(len(truth))
    (run_dir / f"{split}_metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def evaluate_events(split: str, table: pd.DataFrame, probs: np.ndarray, labels: Sequence[str], data: DataConfig,
                    evaluation: EvaluationConfig, run_dir: str | Path) -> dict[str, Any]:
    """Chunk predictions ``(rows, classes * bins)`` of each recording joined in time, turned into events
    (``<split>_events.csv``: file, class, onset, offset, score) and scored against the annotations
    (``<split>_event_metrics.json``: per class and micro precision / recall / F1)."""
    bins = data.event_bins
    bin_s = data.window_s / bins
    predicted = []
    order = table.assign(_row=np.arange(len(table))).sort_values(["filename", "start"], kind="stable")
    for file, rows in order.groupby("filename", sort=True):
        per_bin = np.concatenate([probs[r].reshape(len(labels), bins) for r in rows["_row"]], axis=1)
        usable = int(np.ceil(float(rows["seconds"].iloc[0]) / bin_s))  # no events in the padding past the end
        predicted.extend(probs_to_events(file, per_bin[:, :usable], labels, bin_s, evaluation.threshold,
                                         evaluation.min_event_s))
    predicted_df = pd.DataFrame(predicted, columns=EVENT_COLUMNS)
    predicted_df.to_csv(Path(run_dir) / f"{split}_events.csv", index=False)
    recordings = table.drop_duplicates("filename")
    metrics = event_metrics(reference_events(recordings), predicted_df, evaluation.onset_tolerance_s)
    result = {"onset_tolerance_s": evaluation.onset_tolerance_s, "threshold": evaluation.threshold,
              "recordings": len(recordings), "predicted_events": len(predicted_df), **metrics}
    (Path(run_dir) / f"{split}_event_metrics.json").write_text(json.dumps(result, indent=1))
    return {"event_f1": metrics["micro"]["f1"], "event_precision": metrics["micro"]["precision"],
            "event_recall": metrics["micro"]["recall"]}


def evaluate_splits(trainer: Trainer, splits: dict[str, pd.DataFrame], labels: Sequence[str], data: DataConfig,
                    evaluation: EvaluationConfig, run_dir: str | Path, make_dataset: Callable[[pd.DataFrame], Any],
                    batch_size: int = 64) -> dict[str, dict[str, Any]]:
    """Score every non-empty split with the model as it is; returns {split: metrics}."""
    out = {}
    for name, table in splits.items():
        if len(table) == 0:
            continue
        probs, targets = trainer.predict_dataset(make_dataset(table), batch_size)
        if get_task(data.task).frame_level:
            out[name] = evaluate_events(name, table, probs, labels, data, evaluation, run_dir)
        else:
            out[name] = evaluate(get_task(data.task), name, probs, targets, labels, run_dir, evaluation.threshold)
    return out


def validation_row_ids(val_df: pd.DataFrame, window_frames: int, window_s: float) -> list[str]:
    """The submission-style id of each validation row: ``<stem>_<end second>`` of its window (a chunk's own, or
    the first), the row ``predict.py`` writes for the same window of the same file."""
    starts = val_df["start"].fillna(0).astype(int) if "start" in val_df else [0] * len(val_df)
    return [row_id(Path(name).stem, int(start) // window_frames, window_s)
            for name, start in zip(val_df["filename"], starts)]


def write_thresholds(path: Path, targets: np.ndarray, probs: np.ndarray, outputs: Sequence[str],
                     precision: float, source: str = "validation", min_positives: int = 5) -> None:
    """Per-class thresholds reaching ``precision`` on these outputs (an events model's ``class@bin`` outputs per
    class: the most confident bin of each window against the class's presence in it), ``source`` naming the set.
    With another ``source`` than the validation split (labelled soundscape windows: the recordings detections are
    made on) the classes with at least ``min_positives`` positives there whose precision gets there take its
    thresholds, and the others keep those already in ``path``."""
    from inference.detections import OutputLayout  # noqa: PLC0415
    from utils.thresholds import thresholds_for_precision  # noqa: PLC0415

    layout = OutputLayout.of(outputs)
    targets = np.nan_to_num(targets)
    if layout.bins:
        shape = (len(probs), len(layout.classes), layout.bins)
        probs, targets = probs.reshape(shape).max(axis=2), targets.reshape(shape).max(axis=2)
    table = thresholds_for_precision(targets, probs, layout.classes, precision).assign(source=source)
    if path.is_file() and source != "validation":  # the validation split's thresholds stay for the other classes
        kept = pd.read_csv(path, dtype={"class": str}).set_index("class")
        mine = table.set_index("class")
        enough = (mine["positives"] >= min_positives) & mine["reached"].astype(bool)
        table = pd.concat([mine[enough], kept[~kept.index.isin(mine.index[enough])]])
        table = table.loc[layout.classes].reset_index()
    table.to_csv(path, index=False, float_format="%.6g")
    reached = int(table["reached"].sum())
    log.info("thresholds for precision %.2f (%s): reached for %d of %d classes -> %s", precision,
             ", ".join(f"{n} from {k}" for k, n in table["source"].value_counts().items()), reached, len(table), path)


def write_validation_outputs(trainer: Trainer, val_df: pd.DataFrame, labels: Sequence[str], run_dir: Path,
                             fold: int, row_ids: Sequence[str], precision: float = 0.9) -> None:
    """The best epoch's out-of-fold predictions (``val_predictions.csv``: filename, primary_label, fold, row_id,
    one probability per output), per-class ROC-AUC / AP (``per_class_metrics.csv`` and ``.png``) and the per-class
    thresholds for ``precision`` (``thresholds.csv``, what ``detect.py`` uses) in the run folder."""
    epoch, probs, targets = trainer.best_val or (trainer.history[-1]["epoch"], *trainer.last_val)
    val_pred = pd.DataFrame(probs, columns=labels)
    val_pred.insert(0, "filename", list(val_df["filename"]))
    val_pred.insert(1, "primary_label", list(val_df["primary_label"]))
    val_pred.insert(2, "fold", fold)
    val_pred.insert(3, "row_id", list(row_ids))
    val_pred.to_csv(run_dir / "val_predictions.csv", index=False, float_format="%.7f")
    write_thresholds(run_dir / "thresholds.csv", targets, probs, labels, precision)
    table = per_class_table((np.nan_to_num(targets) >= 1.0).astype(np.int8), probs, labels)
    table.to_csv(run_dir / "per_class_metrics.csv", index=False, float_format="%.5f")
    plot_per_class(table, run_dir / "per_class_metrics.png", f"validation at epoch {epoch}, per class (positives)")
