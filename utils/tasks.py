"""The task as a registry: what ``[data] task`` trains and how it is scored, declared once per task.

Every layer asks the registered :class:`Task` what it is (its outputs' activation, whether each example has one
class, one output, or frame-level event bins, how mixup combines two examples, which soundscape labels it can
use) instead of comparing the task's name with a string literal. A new task is one :func:`register_task` call.
Imports nothing of the project but the registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from utils.registry import Registry

TASKS = Registry("task")


@dataclass(frozen=True)
class Task:
    """What a task is. ``activation``: the outputs' activation the loss must declare (None: any). ``one_label``:
    each example is one class (one-hot targets, arg-max accuracy, class weights ``N / (classes x count)``).
    ``single_output``: one output, the positive class (thresholded accuracy, precision, recall). ``frame_level``:
    outputs per class and event bin (a SED head, event annotations, validation on fixed chunks, event metrics).
    ``mixup``: ``overlay`` (sounds added, labels united) or ``beta`` (a convex mix of one-hot targets).
    ``soundscape_labels``: trains on labelled soundscape windows (multi-label windows). ``soft_labels``: trains on
    soft pseudo-labels (self-training). ``distillable``: clip-level outputs a teacher's soft targets can teach."""

    name: str
    help: str
    mixup: str
    activation: Optional[str] = None
    one_label: bool = False
    single_output: bool = False
    frame_level: bool = False
    soundscape_labels: bool = False
    soft_labels: bool = False
    distillable: bool = False

    @property
    def classification_report(self) -> bool:
        """Scored per example with a confusion matrix and a classification report (one label or one output)."""
        return self.one_label or self.single_output

    def outputs(self, classes: Sequence[str], event_bins: int = 0) -> list[str]:
        """The model's output names: the classes, or ``class@bin`` (class-major) for a frame-level task."""
        return output_names(classes, self.event_bins(event_bins))

    def event_bins(self, configured: int) -> int:
        """Event bins per window the model outputs (``[data] event_bins`` for a frame-level task, else 0)."""
        return configured if self.frame_level else 0


def output_names(classes: Sequence[str], event_bins: int = 0) -> list[str]:
    """Output names of a model with ``event_bins`` bins per class (0: one output per class): ``class@bin``,
    class-major, as :class:`inference.detections.OutputLayout` reads them back."""
    return [f"{c}@{k}" for c in classes for k in range(event_bins)] if event_bins else list(classes)


def register_task(task: Task) -> Task:
    """Add ``task`` to the registry (``[data] task = task.name``)."""
    TASKS.register(task.name, task=task)(lambda: task)
    return task


def get_task(name: str) -> Task:
    """The registered task ``name`` (an unknown name lists the known ones)."""
    return TASKS.facts(name)["task"]


def list_tasks() -> list[str]:
    """Every registered task name, in registration order."""
    return TASKS.in_order()


register_task(Task("multilabel", "sigmoid per class (BirdCLEF): any number of classes per window", mixup="overlay",
                   soundscape_labels=True, soft_labels=True, distillable=True))
register_task(Task("multiclass", "one class per example (softmax)", mixup="beta", activation="softmax",
                   one_label=True, soft_labels=True, distillable=True))
register_task(Task("binary", "one output, the positive class against everything else", mixup="beta",
                   activation="sigmoid", single_output=True))
register_task(Task("events", "frame-level events: per class and time bin (SED head)", mixup="overlay",
                   activation="sigmoid", frame_level=True))
