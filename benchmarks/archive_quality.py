"""The archive loop on real clips, the annotator simulated from known labels: query-by-example retrieval and active
learning, printed as JSON lines.

    python benchmarks/archive_quality.py --data-dir ../shared/data/esc50_fold4 [--parts retrieval active]
        [--seeds 0 1 2] [--no-cnn] [--work runs/archive_quality]

The clips (a csv source: ``labels.csv`` with ``path,label,group``) are embedded into an archive database with
BirdNET V2.4 (``archive.build``: 3-s windows every 2 s, so a 5-s clip is two windows; a clip's vector is the mean
direction of its windows). Folds are #16's (``[data] split = kfold``, 4 folds, seed 42).

``retrieval``: each clip is a query, every other clip not of its own ``group`` a candidate, the clips of its class
the relevant ones; mean average precision and precision@5 for (a) BirdNET embeddings, (b) per-band mean and std of
the dB mel (256 numbers, standardised: the baseline), and (c) the mel CNN's penultimate layer (a CNN trained by
``train_classifier.py --config configs/small_dataset.ini`` on the other folds, ``archive.window_embedders``'
checkpoint embedder). (a) and (b) over all clips at once; all three within each held-out fold (the CNN never trained
on those clips), mean ± std over the folds.

``active``: per fold and seed, the pool is the training folds' clips; one labelled clip per class to start, then
rounds of 20 labels up to 200, each round's classifier :func:`archive.active_learning.fit_head` (a linear head, one
sigmoid per class) on the labelled clips' BirdNET vectors, the next 20 chosen by each strategy of
``archive.active_learning`` (margin, top2, random); held-out accuracy (argmax) after each round, mean ± std over
folds x seeds. Real audio, for measurements only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_FOLDS, SPLIT_SEED = 4, 42


def clip_table(data_dir: Path) -> pd.DataFrame:
    """The csv source's table of the clips, with #16's fold of each."""
    from dataloader.sources.local import load_csv  # noqa: PLC0415
    from dataloader.splits import assign_folds  # noqa: PLC0415

    table = load_csv(data_dir / "labels.csv")
    table["fold"] = assign_folds(table, N_FOLDS, SPLIT_SEED)
    table["name"] = [Path(p).resolve().relative_to(data_dir.resolve()).as_posix() for p in table["path"]]
    return table.reset_index(drop=True)


def database_vectors(db_path: Path, names: list[str]) -> np.ndarray:
    """(clips, dim): each recording's mean window direction, in the order of ``names``."""
    from archive.database import open_archive, vectors, windows_frame  # noqa: PLC0415
    from archive.search import unit  # noqa: PLC0415

    db = open_archive(db_path, readonly=True)
    frame = windows_frame(db)
    vecs = unit(vectors(db, frame["window_id"].to_numpy()))
    means = pd.DataFrame(vecs).groupby(frame["file"].to_numpy()).mean()
    return unit(means.loc[names].to_numpy(dtype=np.float32))


def embed_archive(data_dir: Path, db_path: Path, model: str, hop_s: Optional[float]) -> dict[str, Any]:
    """Build (or complete) the archive database of the clips; its build summary."""
    from archive.build import build_archive  # noqa: PLC0415
    from utils.runtime import available_cores  # noqa: PLC0415

    report = build_archive(data_dir, db_path, model, hop_s, workers=available_cores())
    return report.summary(db_path)


def mel_statistics(paths: list[str]) -> np.ndarray:
    """(clips, 2 x mel bands): each band's mean and std of the dB mel, standardised over the clips."""
    from dataloader.audio import load_audio  # noqa: PLC0415
    from dataloader.mel import MelTransform  # noqa: PLC0415
    from utils.config_schema import DataProcessConfig  # noqa: PLC0415

    settings = DataProcessConfig()
    mel = MelTransform.from_config(settings)
    rows = []
    for p in paths:
        m = mel(load_audio(p, settings.sample_rate))
        rows.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
    x = np.stack(rows)
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def retrieval_scores(x: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Mean average precision and precision@5 of every item as a query (cosine), its own group left out;
    ``p_at_5_ceiling``: the precision@5 a perfect ranking would get (fewer than 5 relevant items cap it)."""
    from sklearn.metrics import average_precision_score  # noqa: PLC0415

    v = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    aps, p5, ceiling = [], [], []
    for i in range(len(v)):
        keep = groups != groups[i]
        relevant = labels[keep] == labels[i]
        if not relevant.any():
            continue
        aps.append(average_precision_score(relevant, sims[i, keep]))
        top = np.argsort(-sims[i, keep], kind="stable")[:5]
        p5.append(relevant[top].mean())
        ceiling.append(min(5, int(relevant.sum())) / 5)
    return {"map": float(np.mean(aps)), "p_at_5": float(np.mean(p5)), "p_at_5_ceiling": float(np.mean(ceiling)),
            "queries": len(aps)}


def train_cnn(data_dir: Path, fold: int, work: Path) -> str:
    """The mel CNN of #16 (configs/small_dataset.ini) trained on the other folds; its checkpoint."""
    import train_classifier  # noqa: PLC0415

    runs = work / "cnn_runs"
    runs.mkdir(parents=True, exist_ok=True)
    before = set(runs.iterdir())
    overrides = [f"data.fold={fold}", "data.source=csv", f"paths.data_dir={data_dir}",
                 f"data.labels_csv={data_dir / 'labels.csv'}", f"paths.runs_dir={runs}",
                 f"paths.cache_dir={work / 'cache'}", f"data.split_seed={SPLIT_SEED}"]
    with contextlib.redirect_stdout(sys.stderr):
        code = train_classifier.main(["--config", str(ROOT / "configs" / "small_dataset.ini"),
                                      *[f"--set={o}" for o in overrides]])
    if code:
        raise RuntimeError(f"the CNN of fold {fold} did not train ({code})")
    run = sorted(set(runs.iterdir()) - before)[-1]
    return json.loads((run / "summary.json").read_text())["checkpoint"]


def retrieval(args: argparse.Namespace, table: pd.DataFrame, birdnet: np.ndarray, work: Path) -> list[dict]:
    """The retrieval lines (see the module docstring)."""
    from archive.window_embedders import load_window_embedder  # noqa: PLC0415

    labels, groups = table["primary_label"].to_numpy(), table["group"].to_numpy()
    stats = mel_statistics(list(table["path"]))
    out = [{"part": "retrieval", "scope": "all clips", "embedding": name, **retrieval_scores(x, labels, groups)}
           for name, x in (("birdnet", birdnet), ("mel_statistics", stats))]
    per_fold: dict[str, list[dict]] = {"birdnet": [], "mel_statistics": [], "cnn_penultimate": []}
    for fold in range(N_FOLDS):
        held = (table["fold"] == fold).to_numpy()
        for name, x in (("birdnet", birdnet), ("mel_statistics", stats)):
            per_fold[name].append(retrieval_scores(x[held], labels[held], groups[held]))
        if args.cnn:
            embedder = load_window_embedder(f"checkpoint:{train_cnn(Path(args.data_dir), fold, work)}")
            x = np.stack([embedder.embed_file(p, embedder.window_s)[1].mean(0) for p in table["path"][held]])
            per_fold["cnn_penultimate"].append(retrieval_scores(x, labels[held], groups[held]))
        print(json.dumps({"part": "retrieval", "scope": f"held-out fold {fold}",
                          **{k: v[-1] for k, v in per_fold.items() if v}}), flush=True)
    for name, rows in per_fold.items():
        if rows:
            out.append({"part": "retrieval", "scope": "within each held-out fold, mean ± std", "embedding": name,
                        **{m: f"{np.mean([r[m] for r in rows]):.3f} ± {np.std([r[m] for r in rows], ddof=1):.3f}"
                           for m in ("map", "p_at_5", "p_at_5_ceiling")}})
    return out


def active_learning(args: argparse.Namespace, table: pd.DataFrame, x: np.ndarray) -> list[dict]:
    """The active-learning lines (see the module docstring)."""
    from archive.active_learning import fit_head, head_probs, select_windows  # noqa: PLC0415

    classes = sorted(set(table["primary_label"]))
    y = np.array([classes.index(c) for c in table["primary_label"]])
    curves: dict[str, dict[int, list[float]]] = {s: {} for s in args.strategies}
    for fold in range(N_FOLDS):
        pool, test = np.flatnonzero(table["fold"] != fold), np.flatnonzero(table["fold"] == fold)
        for seed in args.seeds:
            rng = np.random.default_rng([seed, fold])
            start = [int(rng.choice(pool[y[pool] == c])) for c in range(len(classes))]
            for strategy in args.strategies:
                labelled = list(start)
                while True:
                    onehot = np.eye(len(classes), dtype=np.float32)[y[labelled]]
                    head = fit_head(x[labelled], onehot, np.ones_like(onehot, dtype=bool), seed=seed)
                    acc = float((head_probs(head, x[test]).argmax(1) == y[test]).mean())
                    curves[strategy].setdefault(len(labelled), []).append(acc)
                    if len(labelled) >= args.max_labels:
                        break
                    rest = np.setdiff1d(pool, labelled)
                    count = min(args.round_size, args.max_labels - len(labelled))
                    picked, _ = select_windows(head_probs(head, x[rest]), count, strategy,
                                               seed=seed * 100 + len(labelled))
                    labelled += [int(i) for i in rest[picked]]
            print(json.dumps({"part": "active", "fold": fold, "seed": seed,
                              **{s: round(curves[s][max(curves[s])][-1], 3) for s in args.strategies}}), flush=True)
    out = []
    for n in sorted(curves[args.strategies[0]]):
        row: dict[str, Any] = {"part": "active", "labels": n, "runs": len(curves[args.strategies[0]][n])}
        for s in args.strategies:
            vals = curves[s][n]
            row[s] = f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"
        base = np.array(curves["random"][n]) if "random" in curves else None
        for s in args.strategies:
            if base is not None and s != "random":
                row[f"{s}_minus_random"] = round(float(np.mean(np.array(curves[s][n]) - base)), 3)
        out.append(row)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--parts", nargs="+", default=["retrieval", "active"], choices=("retrieval", "active"))
    p.add_argument("--model", default="birdnet")
    p.add_argument("--hop-s", type=float, default=2.0)
    p.add_argument("--no-cnn", dest="cnn", action="store_false", help="retrieval without the CNN (no training)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=["margin", "top2", "random"])
    p.add_argument("--round-size", type=int, default=20)
    p.add_argument("--max-labels", type=int, default=200)
    p.add_argument("--work", default="runs/archive_quality")
    args = p.parse_args(argv)
    data_dir, work = Path(args.data_dir), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build = embed_archive(data_dir, work / "db", args.model, args.hop_s)
    print(json.dumps({"part": "database", **build}), flush=True)
    table = clip_table(data_dir)
    birdnet = database_vectors(work / "db", list(table["name"]))
    rows = []
    if "retrieval" in args.parts:
        rows += retrieval(args, table, birdnet, work)
    if "active" in args.parts:
        rows += active_learning(args, table, birdnet)
    for row in rows:
        print(json.dumps(row), flush=True)
    print(json.dumps({"part": "done", "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
