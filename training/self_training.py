"""Self-training as one command: a teacher, then rounds of students trained on the labels and on out-of-fold soft
pseudo-labels of an unlabeled pool (the loop of the BirdCLEF 2025 and 2026 winners).

    python train_classifier.py --rounds 3 [--set self_training.teacher=birdnet | runs/<head>/checkpoints/best.pt]
    python train_classifier.py --resume-loop auto        # a killed loop continues at its round

Round 0 is the teacher: a checkpoint (``[self_training] teacher``, e.g. a head on BirdNET embeddings), an embedding
model's own classes mapped onto the run's (``birdnet``), or, when empty, a model round 0 trains on the labels
alone. Each round r >= 1 then:

1. splits the pool (``pool_dir``, default the source's unlabeled / train soundscapes, less every soundscape that
   has labelled windows: those train and validate through ``[data] soundscape_labels``) into ``folds`` folds by
   recording, seeded;
2. trains one student per fold on the labels plus the previous round's pseudo-labels of the *other* folds, each
   soft target ``probability ** power`` (the round's power), capped at ``cap``; classes no model of the previous
   round predicts are left out of the loss (NaN), not taught as absent;
3. pseudo-labels each fold with the student that did not train on it, so that a recording's pseudo-label never
   comes from a model that saw it (round 0's teacher trained on no pool recording).

The loop folder ``runs/selftrain-<time>/`` holds ``state.json`` (what is done: a rerun with ``--resume-loop``
skips finished students and rounds), ``round_<r>/pseudo.csv`` (the round's pseudo-labels, before the next round's
transform), ``rounds.csv`` and ``rounds.png`` (every round's ``val_score``, ``soundscape_val_score``,
``soundscape_score`` and test accuracy, mean ± std over its students; with labelled soundscape windows, the score
of the round's ensemble and of the raw teacher on the validation windows over the classes the teacher predicts).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd

from training.config import ConfigError
from training.pseudo_pool import (file_stem, labelled_validation, pool_folds, pool_recordings, powers,
                                  predict_pool, round_power, score_on_windows, soft_targets, teacher_members)
from utils.atomic_files import atomic_write_text
from utils.config_schema import Config

log = logging.getLogger(__name__)

# trains one run of ``cfg`` (its own run folder, summary.json written) and returns the folder
RunTrainer = Callable[[Config], Path]
STATE = "state.json"
SCORES = ("val_score", "soundscape_val_score", "soundscape_score", "val_accuracy", "test_accuracy")


@dataclasses.dataclass
class LoopState:
    """What a loop has done (``state.json``): per round its members (checkpoints), its students' run folders and
    its row of the table; a student's run is recorded as soon as it finishes."""

    folder: Path
    settings: dict[str, Any]
    rounds: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @classmethod
    def load(cls, folder: Path) -> "LoopState":
        data = json.loads((folder / STATE).read_text())
        return cls(folder, data["settings"], data["rounds"])

    def save(self) -> None:
        atomic_write_text(self.folder / STATE, json.dumps({"settings": self.settings, "rounds": self.rounds},
                                                          indent=1, default=str))

    def round(self, r: int) -> dict[str, Any]:
        while len(self.rounds) <= r:
            self.rounds.append({"round": len(self.rounds), "students": {}, "done": False})
        return self.rounds[r]


def loop_settings(cfg: Config) -> dict[str, Any]:
    """What must match for a loop to be resumed: the whole config less the number of rounds (a finished loop can be
    taken further)."""
    d = cfg.to_dict()
    d["self_training"] = {k: v for k, v in d["self_training"].items() if k != "rounds"}
    return d


def find_loop(runs_dir: str | Path, setting: str) -> Path:
    """``--resume-loop``: a loop folder, or ``auto`` = the newest ``selftrain-*`` under ``runs_dir``."""
    if setting != "auto":
        folder = Path(setting)
        if not (folder / STATE).is_file():
            raise ConfigError(f"--resume-loop {setting}: no {STATE} there (not a self-training loop folder)")
        return folder
    loops = sorted(p.parent for p in Path(runs_dir).glob(f"selftrain-*/{STATE}"))
    if not loops:
        raise ConfigError(f"--resume-loop auto: no self-training loop under {runs_dir}")
    return loops[-1]


def student_config(cfg: Config, pseudo_csv: Path, pool_dir: Path, fold: int) -> Config:
    """``cfg`` for one student: the pseudo-labels to train on, where their recordings are, and its seed."""
    st = cfg.self_training
    data = dataclasses.replace(cfg.data, pseudo_labels=str(pseudo_csv), pseudo_audio_dir=str(pool_dir),
                               pseudo_min_prob=st.min_prob)
    trainer = dataclasses.replace(cfg.trainer, seed=cfg.trainer.seed + fold, resume="")
    agent = cfg.agent
    if st.distill and st.teacher and not agent.distill_teacher:  # the teacher on the labelled recordings too
        agent = dataclasses.replace(agent, distill_teacher=st.teacher)
    return dataclasses.replace(cfg, data=data, trainer=trainer, agent=agent,
                               self_training=dataclasses.replace(st, rounds=0))


def run_scores(run_dir: Path) -> dict[str, float]:
    """A run's scores from its ``summary.json`` (missing ones left out)."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    out = {k: summary[k] for k in SCORES[:3] if isinstance(summary.get(k), (int, float))}
    for split in ("val", "test"):  # multiclass and binary runs: accuracy (the test split may be empty)
        accuracy = (summary.get(f"{split}_metrics") or {}).get("accuracy")
        if isinstance(accuracy, (int, float)):
            out[f"{split}_accuracy"] = accuracy
    return out


def round_row(r: int, runs: Sequence[Path], pseudo_windows: int) -> dict[str, Any]:
    """One line of ``rounds.csv``: each score's mean and std over the round's runs."""
    scores = [run_scores(p) for p in runs]
    row: dict[str, Any] = {"round": r, "models": len(runs), "pseudo_windows": pseudo_windows}
    for key in SCORES:
        values = [s[key] for s in scores if key in s]
        if values:
            row[key] = round(float(np.mean(values)), 6)
            row[f"{key}_std"] = round(float(np.std(values, ddof=1)), 6) if len(values) > 1 else 0.0
    return row


def plot_rounds(table: pd.DataFrame, path: Path) -> Path:
    """``rounds.png``: each score per round, mean ± std over the round's students."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for key in (*SCORES, "teacher_classes_soundscape_val", "raw_teacher_soundscape_val"):
        if key in table and table[key].notna().any():
            std = table[f"{key}_std"].fillna(0.0) if f"{key}_std" in table else 0.0
            ax.errorbar(table["round"], table[key], yerr=std, marker="o", capsize=3, label=key)
    ax.set_xlabel("round (0 = teacher)")
    ax.set_xticks(table["round"])
    ax.set_ylabel("score")
    ax.set_title("self-training: every round's scores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_loop(cfg: Config, train_run: RunTrainer, resume: str = "") -> Path:
    """The teacher and ``[self_training] rounds`` rounds of students (see the module docstring); returns the loop
    folder. ``train_run`` trains one configuration in a run folder of its own; ``resume``: a loop folder or
    ``auto`` to continue."""
    from dataloader.sources import load_source  # noqa: PLC0415

    st = cfg.self_training
    schedule = powers(st.power)
    teacher_members(cfg)  # a wrong teacher stops before anything is trained
    single = st.folds == 1  # one student on the whole pool: nothing to pseudo-label out of fold afterwards
    if single and st.rounds > 1:
        raise ConfigError(f"[self_training] folds = 1 with rounds = {st.rounds}: a later round needs out-of-fold "
                          f"pseudo-labels; allowed: folds >= 2, or rounds = 1")
    source = load_source(cfg.data, cfg.paths)
    if resume:
        folder = find_loop(cfg.paths.runs_dir, resume)
        state = LoopState.load(folder)
        if state.settings != loop_settings(cfg):
            raise ConfigError(f"--resume-loop {folder}: its settings differ from this config's (the loop's are in "
                              f"{folder / 'config.ini'}); start a new loop instead")
        log.info("self-training: resuming %s", folder)
    else:
        folder = Path(cfg.paths.runs_dir) / f"selftrain-{time.strftime('%Y%m%d-%H%M%S')}"
        folder.mkdir(parents=True, exist_ok=False)
        state = LoopState(folder, loop_settings(cfg))
        from training.config import to_ini  # noqa: PLC0415

        (folder / "config.ini").write_text(to_ini(cfg))
        state.save()
    files = pool_recordings(cfg, source)
    folds = pool_folds(files, st.folds, cfg.trainer.seed)
    classes = list(source.classes or sorted(set(source.recordings["primary_label"])))
    pool_dir = Path(st.pool_dir) if st.pool_dir else Path(source.soundscape_dir)
    truth = labelled_validation(cfg, source)
    log.info("self-training in %s: %d rounds after the teacher, a pool of %d recordings in %d folds", folder,
             st.rounds, len(files), st.folds)

    zero = state.round(0)
    if not zero["done"]:
        members = teacher_members(cfg)
        if members:
            zero["members"] = members
        else:  # round 0 trains the first teacher on the labels alone
            run_dir = zero["students"].get("0") or str(train_run(dataclasses.replace(
                cfg, self_training=dataclasses.replace(st, rounds=0))))
            zero["students"]["0"] = run_dir
            zero["members"] = [checkpoint_of(Path(run_dir))]
        state.save()
        frame, predicted = predict_pool(zero["members"], files, classes, source.data_dir, cfg.data.window_s)
        write_round(folder, 0, frame, predicted, zero)
        zero["row"] = {**round_row(0, [Path(p) for p in zero["students"].values()], 0),
                       **teacher_scores(zero["members"], zero["members"], truth, predicted, source, cfg)}
        zero["done"] = True
        state.save()
    teacher_classes = zero["predicted"]
    for r in range(1, st.rounds + 1):
        this, before = state.round(r), state.rounds[r - 1]
        if this["done"]:
            continue
        previous = pd.read_csv(folder / before["pseudo"], dtype={"row_id": str})
        targets = soft_targets(previous, round_power(schedule, r), st.cap, before["predicted"])
        stems = file_stem(targets["row_id"])
        frames, windows = [], 0
        for k in range(st.folds):
            train_rows = targets if single else targets[stems.map(lambda s, k=k: folds.get(s, -1) not in (-1, k))]
            csv = folder / f"round_{r}" / f"train_fold{k}.csv"
            if str(k) not in this["students"]:
                csv.parent.mkdir(parents=True, exist_ok=True)
                train_rows.to_csv(csv, index=False, float_format="%.6f")
                this["students"][str(k)] = str(train_run(student_config(cfg, csv, pool_dir, k)))
                state.save()
            windows += len(train_rows)
            if not single:
                held_out = [f for f in files if folds[f.stem] == k]
                frame, predicted = predict_pool([checkpoint_of(Path(this["students"][str(k)]))], held_out, classes,
                                                source.data_dir, cfg.data.window_s)
                frames.append(frame)
        members = [checkpoint_of(Path(p)) for p in this["students"].values()]
        this["members"] = members
        if frames:
            write_round(folder, r, pd.concat(frames, ignore_index=True), predicted, this)
        this["row"] = {**round_row(r, [Path(p) for p in this["students"].values()], windows // st.folds),
                       "power": round_power(schedule, r),
                       **teacher_scores(members, zero["members"], truth, teacher_classes, source, cfg)}
        this["done"] = True
        state.save()
    table = write_table(state)
    log.info("self-training finished: %s\n%s", folder / "rounds.csv", table.to_string(index=False))
    return folder


def checkpoint_of(run_dir: Path) -> str:
    """The best checkpoint of a finished run."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if not summary.get("checkpoint"):
        raise ConfigError(f"{run_dir}: the run wrote no checkpoint ([callbacks] model_checkpoint = false?); the "
                          f"loop needs one per round")
    return str(summary["checkpoint"])


def write_round(folder: Path, r: int, frame: pd.DataFrame, predicted: Sequence[str], entry: dict[str, Any]) -> None:
    """The round's pseudo-labels (``round_<r>/pseudo.csv``, raw probabilities) recorded in ``entry``."""
    path = folder / f"round_{r}" / "pseudo.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.6f")
    entry.update(pseudo=str(path.relative_to(folder)), predicted=list(predicted), pool_rows=len(frame))


def teacher_scores(members: Sequence[str], teacher: Sequence[str], truth: Optional[pd.DataFrame],
                   teacher_classes: Sequence[str], source: Any, cfg: Config) -> dict[str, float]:
    """On the labelled validation windows, over the classes the teacher predicts: the round's ensemble and the
    raw teacher (empty without labelled soundscape windows)."""
    if truth is None or not teacher_classes:
        return {}
    out = {"teacher_classes_soundscape_val": round(score_on_windows(members, truth, teacher_classes,
                                                                    source.data_dir, cfg.data.window_s), 6)}
    out["raw_teacher_soundscape_val"] = round(score_on_windows(teacher, truth, teacher_classes, source.data_dir,
                                                               cfg.data.window_s), 6)
    return out


def write_table(state: LoopState) -> pd.DataFrame:
    """``rounds.csv`` and ``rounds.png`` of the finished rounds."""
    table = pd.DataFrame([r["row"] for r in state.rounds if r.get("done")])
    table.to_csv(state.folder / "rounds.csv", index=False)
    plot_rounds(table, state.folder / "rounds.png")
    return table
