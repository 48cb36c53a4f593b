"""Active learning on an archive database: a small classifier on the labelled window embeddings (negatives
included), retrained each round, picks the next windows worth a person's ear.

    python -m archive.active_learning --db ARCHIVE_DB [--classes owl wren] [--batch 20] [--head linear | mlp]
                                      [--strategy auto | margin | top2 | topk | random] [--out ARCHIVE_DB/rounds]

One call is one round: the classifier (the ``embedding`` family's head, :class:`factory.embedding_head.EmbeddingHead`,
one sigmoid per class) is trained on every label in the database now and written as
``round_<k>/classifier.pt``, a checkpoint ``predict.py`` and ``detect.py`` run on audio like any embedding head (the
database's model as its front end, the database's window as its input); ``round_<k>/thresholds.csv`` holds per-class
thresholds for precision 0.9 from out-of-fold scores of the labelled windows (``detect.py --thresholds``), and
``round_<k>/queue.csv`` the next ``--batch`` unlabelled windows (``--strategy auto``: ``top2`` when every
labelled window has one class, else ``margin``): those nearest the decision boundary (``margin``:
smallest ``|p - 0.5|`` over the classes; ``top2`` for one class per window: smallest gap between its two best
scores; ``top2_spread``: the same, one window per predicted class in a round first), the most confident per class
in turn (``topk``), or drawn at random (``random``, the baseline).
``python -m archive.label_page --db ... --queue round_<k>/queue.csv`` labels them;
``python -m archive.score --db ... --checkpoint round_<k>/classifier.pt`` scores the whole archive.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archive.database import ArchiveSettings, open_archive, settings_of, vectors, windows_frame  # noqa: E402
from archive.labels import label_matrix, labels_frame  # noqa: E402
from utils.registry import Registry  # noqa: E402

STRATEGIES = Registry("selection strategy")
QUEUE_COLUMNS = ["window_id", "file", "start_s", "end_s", "reason", "score"]


@STRATEGIES.register("margin")
def margin_pick(probs: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` windows nearest a class's decision boundary: smallest ``min_c |p_c - 0.5|`` (ties at random)."""
    margin = np.abs(probs - 0.5).min(axis=1)
    order = np.lexsort((rng.random(len(margin)), margin))[:count]
    return order, np.abs(probs[order] - 0.5).argmin(axis=1)


def top2_gap(probs: np.ndarray) -> np.ndarray:
    """Per window, the gap between its two highest scores (one class: its distance from 0.5)."""
    if probs.shape[1] < 2:
        return np.abs(probs[:, 0] - 0.5)
    ranked = np.sort(probs, axis=1)
    return ranked[:, -1] - ranked[:, -2]


@STRATEGIES.register("top2")
def top2_pick(probs: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One class per window (multiclass data): smallest gap between its two highest scores (ties at random)."""
    gap = top2_gap(probs)
    order = np.lexsort((rng.random(len(gap)), gap))[:count]
    return order, probs[order].argmax(axis=1)


@STRATEGIES.register("top2_spread")
def top2_spread_pick(probs: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``top2``, at most one window per predicted class in a round while other classes still have candidates."""
    gap = top2_gap(probs)
    order = np.lexsort((rng.random(len(gap)), gap))
    best = probs.argmax(axis=1)
    chosen, used = [], set()
    for i in order:
        if best[i] not in used:
            chosen.append(i)
            used.add(best[i])
        if len(chosen) == count:
            break
    taken = set(chosen)
    rest = [i for i in order if i not in taken][:count - len(chosen)]
    picked = np.array(chosen + rest, dtype=np.int64)
    return picked, best[picked]


@STRATEGIES.register("topk")
def topk_pick(probs: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The most confident windows of each class in turn (class 0's best, class 1's best, ...)."""
    ranked = [list(np.argsort(-probs[:, c], kind="stable")) for c in range(probs.shape[1])]
    chosen: list[int] = []
    why: list[int] = []
    while len(chosen) < min(count, len(probs)):
        for c, order in enumerate(ranked):
            while order and order[0] in chosen:
                order.pop(0)
            if order and len(chosen) < count:
                chosen.append(order.pop(0))
                why.append(c)
    return np.array(chosen, dtype=np.int64), np.array(why, dtype=np.int64)


@STRATEGIES.register("random")
def random_pick(probs: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` windows at random (the baseline every strategy must beat)."""
    order = rng.permutation(len(probs))[:count]
    return order, probs[order].argmax(axis=1) if probs.shape[1] else np.zeros(len(order), dtype=np.int64)


def select_windows(probs: np.ndarray, count: int, strategy: str = "margin", seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into ``probs``' rows, the unlabelled candidates) of the next ``count`` windows to label, and the
    class each was picked for."""
    pick: Callable[..., tuple[np.ndarray, np.ndarray]] = STRATEGIES.get(strategy)
    return pick(np.asarray(probs, dtype=np.float64), int(count), np.random.default_rng(seed))


def fit_head(x: np.ndarray, targets: np.ndarray, mask: np.ndarray, head: str = "linear", steps: int = 300,
             lr: float = 1e-2, weight_decay: float = 1e-2, seed: int = 0) -> Any:
    """An :class:`EmbeddingHead` fitted on (n, dim) embeddings: full-batch AdamW on the masked binary
    cross-entropy (a class without an answer for a window is left out), classes weighted to balance positives
    and negatives."""
    import torch  # noqa: PLC0415

    from factory.embedding_head import EmbeddingHead  # noqa: PLC0415

    torch.manual_seed(seed)
    model = EmbeddingHead(x.shape[1], targets.shape[1], head=head, drop_rate=0.1 if head == "mlp" else 0.0)
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None, :, None]
    y = torch.from_numpy(targets.astype(np.float32))
    m = torch.from_numpy(mask.astype(np.float32))
    pos = (y * m).sum(0)
    neg = ((1 - y) * m).sum(0)
    pos_weight = torch.where(pos > 0, neg / pos.clamp(min=1), torch.ones_like(pos)).clamp(1.0, 20.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(inputs), y, pos_weight=pos_weight,
                                                                    reduction="none")
        loss = (loss * m).sum() / m.sum().clamp(min=1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def head_probs(model: Any, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    """(n, classes) sigmoid probabilities of a head on (n, dim) embeddings."""
    import torch  # noqa: PLC0415

    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            part = torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32))[:, None, :, None]
            out.append(torch.sigmoid(model(part)).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.classifier[-1].out_features), dtype=np.float32)


def out_of_fold_probs(x: np.ndarray, targets: np.ndarray, mask: np.ndarray, head: str, folds: int = 5,
                      seed: int = 0) -> np.ndarray:
    """Each labelled window's scores from a head that did not train on it (``folds``-fold; NaN when too few)."""
    out = np.full(targets.shape, np.nan, dtype=np.float32)
    if len(x) < 2 * folds:
        return out
    parts = np.array_split(np.random.default_rng(seed).permutation(len(x)), folds)
    for k, test in enumerate(parts):
        train = np.concatenate([p for j, p in enumerate(parts) if j != k])
        out[test] = head_probs(fit_head(x[train], targets[train], mask[train], head, seed=seed), x[test])
    return out


def label_thresholds(probs: np.ndarray, targets: np.ndarray, mask: np.ndarray, classes: Sequence[str],
                     precision: float = 0.9) -> pd.DataFrame:
    """Per class, the threshold reaching ``precision`` on its answered labelled windows (out-of-fold scores);
    0.5 for a class with too few labels to say (``source`` column: labels or default)."""
    from utils.thresholds import THRESHOLD_COLUMNS, thresholds_for_precision  # noqa: PLC0415

    rows = []
    for c, name in enumerate(classes):
        keep = mask[:, c] & np.isfinite(probs[:, c])
        if keep.sum() >= 4 and targets[keep, c].any():
            row = thresholds_for_precision(targets[keep, c:c + 1], probs[keep, c:c + 1], [name], precision)
            rows.append(row.assign(source="labels"))
        else:
            rows.append(pd.DataFrame([{"class": name, "threshold": 0.5, "precision": np.nan, "recall": np.nan,
                                       "positives": int(targets[mask[:, c], c].sum()), "reached": False}],
                                     columns=THRESHOLD_COLUMNS).assign(source="default"))
    return pd.concat(rows, ignore_index=True)


def classifier_payload(model: Any, classes: Sequence[str], settings: ArchiveSettings, head: str) -> dict[str, Any]:
    """A checkpoint of the head in the pipeline's format: an ``embedding`` family model whose front end is the
    database's model at its window, so ``predict.py`` / ``detect.py`` run it on audio."""
    from dataloader.embedders import embedder_spec  # noqa: PLC0415
    from dataloader.embedding_input import embedding_settings  # noqa: PLC0415
    from dataloader.features import make_frontend  # noqa: PLC0415
    from dataloader.standardize import Standardizer  # noqa: PLC0415
    from utils.checkpoints import ModelMeta  # noqa: PLC0415

    parsed = embedder_spec(settings.model)
    if parsed is None:
        raise ValueError(f"the database was embedded by {settings.model} (a checkpoint's penultimate layer): its "
                         f"classifier scores the database (python -m archive.score) but is no audio model by itself")
    frontend = make_frontend(embedding_settings(parsed[0], parsed[1], settings.window_s))
    meta = ModelMeta(labels=tuple(classes), model_name=parsed[0], data_process=frontend.settings_dict(),
                     window_s=settings.window_s, standardizer=Standardizer.identity(settings.dim).to_dict(),
                     model_kwargs={"family": "embedding", "dim": settings.dim, "head": head}, input=frontend.kind,
                     pad_mode="silence", activation="sigmoid", task="multilabel", classes=tuple(classes))
    return {"model": model.state_dict(), **meta.to_dict()}


def archive_probs(db: Any, model: Any, batch: int = 20000) -> tuple[pd.DataFrame, np.ndarray]:
    """(every window of the database, its (windows, classes) scores), read from the index in batches."""
    windows = windows_frame(db)
    ids = windows["window_id"].to_numpy()
    probs = [head_probs(model, vectors(db, ids[i:i + batch])) for i in range(0, len(ids), batch)]
    return windows, (np.concatenate(probs) if probs else np.zeros((0, 0), dtype=np.float32))


def default_classes(db: Any, background_label: str = "background") -> list[str]:
    """The classes with at least one positive label, sorted."""
    labels = labels_frame(db)
    return sorted(set(labels.loc[labels["kind"] == "positive", "label"]) - {background_label})


def next_round(out_dir: Path) -> int:
    """The number of the round to write: one past the last ``round_<k>`` folder."""
    done = [int(p.name.split("_")[1]) for p in out_dir.glob("round_*") if p.name.split("_")[1].isdigit()]
    return max(done, default=0) + 1


def auto_strategy(targets: np.ndarray) -> str:
    """``top2`` when the labels say one class per window (several classes, no window positive for two), else
    ``margin`` (independent detectors): on ESC-50 the per-class margin fell below random and top2 beat it."""
    return "top2" if targets.shape[1] > 1 and (targets.sum(axis=1) <= 1).all() else "margin"


def run_round(db_path: str | Path, out_dir: Optional[str | Path] = None, classes: Sequence[str] = (),
              strategy: str = "auto", batch: int = 20, head: str = "linear", seed: int = 0,
              unlabelled_as: str = "negative") -> dict[str, Any]:
    """One round (see the module docstring); returns its summary (also ``round_<k>/round.json``). ``strategy``
    ``auto``: :func:`auto_strategy` of the labels."""
    from utils.checkpoints import save_checkpoint  # noqa: PLC0415

    db = open_archive(db_path, readonly=True)
    settings = settings_of(db)
    classes = list(classes) or default_classes(db)
    if not classes:
        raise ValueError("no class has a positive label yet: label a few windows first (python -m archive.search, "
                         "then python -m archive.label_page)")
    ids, targets, mask = label_matrix(db, classes, unlabelled_as)
    strategy = auto_strategy(targets) if strategy == "auto" else strategy
    x = vectors(db, ids)
    model = fit_head(x, targets, mask, head, seed=seed)
    out = Path(out_dir or Path(db_path) / "rounds")
    folder = out / f"round_{next_round(out):03d}"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = save_checkpoint(folder / "classifier.pt", classifier_payload(model, classes, settings, head))
    label_thresholds(out_of_fold_probs(x, targets, mask, head, seed=seed), targets, mask, classes).to_csv(
        folder / "thresholds.csv", index=False, float_format="%.6g")
    windows, probs = archive_probs(db, model)
    candidates = ~windows["window_id"].isin(set(labels_frame(db)["window_id"])).to_numpy()
    picked, why = select_windows(probs[candidates], batch, strategy, seed)
    queue = windows[candidates].iloc[picked].assign(reason=[f"{strategy}: {classes[c]}" for c in why],
                                                     score=probs[candidates][picked, why])
    queue[QUEUE_COLUMNS].to_csv(folder / "queue.csv", index=False, float_format="%.6g")
    summary = {"round": int(folder.name.split("_")[1]), "classes": classes, "labelled_windows": int(len(ids)),
               "positives": {c: int(targets[mask[:, j], j].sum()) for j, c in enumerate(classes)},
               "strategy": strategy, "queue": str(folder / "queue.csv"), "checkpoint": str(checkpoint),
               "thresholds": str(folder / "thresholds.csv")}
    (folder / "round.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--classes", nargs="*", default=[], help="default: every class with a positive label")
    p.add_argument("--strategy", default="auto", choices=["auto", *STRATEGIES.names()],
                   help="auto: top2 when every labelled window has one class, else margin")
    p.add_argument("--batch", type=int, default=20, help="windows in the next queue")
    p.add_argument("--head", default="linear", choices=("linear", "mlp"))
    p.add_argument("--unlabelled-as", default="negative", choices=("negative", "unknown"),
                   help="a labelled window's classes without an answer: negatives, or left out")
    p.add_argument("--out", default=None, help="rounds folder (default <db>/rounds)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps(run_round(args.db, args.out, args.classes, args.strategy, args.batch, args.head, args.seed,
                               args.unlabelled_as)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
