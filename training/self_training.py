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
``soundscape_score`` and accuracy, mean ± std over its students; ``train_seconds`` and ``label_seconds``, what
training the round's models and pseudo-labelling the pool took (the teacher's cost; a resumed round counts the
part after the resume); with labelled soundscape windows, the score of the round's ensemble and of the raw
teacher on the validation windows over the classes the teacher predicts, and (``[self_training] teacher_blend``)
of the students blended with the teacher, its share chosen on those windows, cross-fitted; ``blend.json`` then holds
the last round's blend and the ``predict.py`` command that runs it: :mod:`training.teacher_blend`; ``--resume-loop``
on a finished loop scores a blend its rounds lack).
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
                                  predict_pool, round_power, soft_targets, teacher_members, window_predictions)
from training.teacher_blend import TeacherBlend, blend, blend_score, fit_teacher_blend, stack_members
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
    taken further) and the blend it is scored with (training does not depend on it)."""
    d = cfg.to_dict()
    d["self_training"] = {k: v for k, v in d["self_training"].items() if k not in ("rounds", "teacher_blend")}
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
    for key in (*SCORES, "teacher_classes_soundscape_val", "raw_teacher_soundscape_val", "blend_soundscape_val"):
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


@dataclasses.dataclass
class Loop:
    """What every round of a loop works with."""

    cfg: Config
    source: Any  # dataloader.sources.SourceData
    folder: Path
    state: LoopState
    train_run: RunTrainer
    files: list[Path]  # the pool
    folds: dict[str, int]  # pool stem -> fold
    classes: list[str]
    truth: Optional[pd.DataFrame]  # labelled validation windows (2026), or None

    def predict(self, members: Sequence[str], files: Sequence[Path]) -> tuple[pd.DataFrame, list[str], float]:
        """(pool predictions of ``members`` for ``files``, the classes they predict, seconds taken)."""
        t0 = time.perf_counter()
        frame, predicted = predict_pool(members, files, self.classes, self.source.data_dir, self.cfg.data.window_s)
        return frame, predicted, time.perf_counter() - t0

    def scores(self, members: Sequence[str]) -> dict[str, float]:
        """The round's ensemble and the raw teacher on the labelled validation windows (teacher's classes)."""
        zero = self.state.rounds[0]
        return teacher_scores(members, zero["members"], self.truth, zero["predicted"], self.source, self.cfg)


def run_loop(cfg: Config, train_run: RunTrainer, resume: str = "") -> Path:
    """The teacher and ``[self_training] rounds`` rounds of students (see the module docstring); returns the loop
    folder. ``train_run`` trains one configuration in a run folder of its own; ``resume``: a loop folder or
    ``auto`` to continue."""
    from dataloader.sources import load_source  # noqa: PLC0415

    st = cfg.self_training
    powers(st.power)  # a wrong setting stops before anything is trained
    teacher_members(cfg)
    if st.folds == 1 and st.rounds > 1:
        raise ConfigError(f"[self_training] folds = 1 with rounds = {st.rounds}: a later round needs out-of-fold "
                          f"pseudo-labels; allowed: folds >= 2, or rounds = 1")
    source = load_source(cfg.data, cfg.paths)
    state = open_loop(cfg, resume)
    files = pool_recordings(cfg, source)
    loop = Loop(cfg, source, state.folder, state, train_run, files, pool_folds(files, st.folds, cfg.trainer.seed),
                list(source.classes or sorted(set(source.recordings["primary_label"]))),
                labelled_validation(cfg, source))
    log.info("self-training in %s: %d rounds after the teacher, a pool of %d recordings in %d folds", state.folder,
             st.rounds, len(files), st.folds)
    if not state.round(0)["done"]:
        teacher_round(loop)
    for r in range(1, st.rounds + 1):
        if not state.round(r)["done"]:
            student_round(loop, r)
        else:
            rescore_blend(loop, r)
    table = write_table(state)
    write_blend(state, st.teacher_blend)
    log.info("self-training finished: %s\n%s", state.folder / "rounds.csv", table.to_string(index=False))
    return state.folder


def open_loop(cfg: Config, resume: str) -> LoopState:
    """The state of the loop to continue (``resume``: a folder or ``auto``; its settings must be this config's), or
    of a new loop folder with the resolved config in it."""
    from training.config import to_ini  # noqa: PLC0415

    if resume:
        folder = find_loop(cfg.paths.runs_dir, resume)
        state = LoopState.load(folder)
        if state.settings != loop_settings(cfg):
            raise ConfigError(f"--resume-loop {folder}: its settings differ from this config's (the loop's are in "
                              f"{folder / 'config.ini'}); start a new loop instead")
        log.info("self-training: resuming %s", folder)
        return state
    folder = Path(cfg.paths.runs_dir) / f"selftrain-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=False)
    (folder / "config.ini").write_text(to_ini(cfg))
    state = LoopState(folder, loop_settings(cfg))
    state.save()
    return state


def teacher_round(loop: Loop) -> None:
    """Round 0: the teacher (given, or trained on the labels alone) pseudo-labels the whole pool."""
    cfg, zero = loop.cfg, loop.state.round(0)
    members, t0 = teacher_members(cfg), time.perf_counter()
    if not members:
        run_dir = zero["students"].get("0") or str(loop.train_run(dataclasses.replace(
            cfg, self_training=dataclasses.replace(cfg.self_training, rounds=0))))
        zero["students"]["0"] = run_dir
        members = [checkpoint_of(Path(run_dir))]
    zero["members"], train_s = members, time.perf_counter() - t0
    loop.state.save()
    frame, predicted, label_s = loop.predict(members, loop.files)
    write_round(loop.folder, 0, frame, predicted, zero)
    zero["row"] = {**round_row(0, [Path(p) for p in zero["students"].values()], 0),
                   "train_seconds": round(train_s, 1), "label_seconds": round(label_s, 1), **loop.scores(members)}
    zero["done"] = True
    loop.state.save()


def student_round(loop: Loop, r: int) -> None:
    """Round ``r``: students trained on the labels and the previous round's soft targets of the other folds, each
    fold pseudo-labelled by the student that did not train on it (one student on everything with ``folds = 1``)."""
    cfg, st, this = loop.cfg, loop.cfg.self_training, loop.state.round(r)
    before, power = loop.state.rounds[r - 1], round_power(powers(st.power), r)
    targets = soft_targets(pd.read_csv(loop.folder / before["pseudo"], dtype={"row_id": str}), power, st.cap,
                           before["predicted"])
    stems, single = file_stem(targets["row_id"]), st.folds == 1
    pool_dir = Path(st.pool_dir) if st.pool_dir else Path(loop.source.soundscape_dir)
    frames, predicted, windows, train_s, label_s = [], [], 0, 0.0, 0.0
    for k in range(st.folds):
        rows = targets if single else targets[stems.map(lambda s, k=k: loop.folds.get(s, -1) not in (-1, k))]
        windows += len(rows)
        if str(k) not in this["students"]:
            csv = loop.folder / f"round_{r}" / f"train_fold{k}.csv"
            csv.parent.mkdir(parents=True, exist_ok=True)
            rows.to_csv(csv, index=False, float_format="%.6f")
            t0 = time.perf_counter()
            this["students"][str(k)] = str(loop.train_run(student_config(cfg, csv, pool_dir, k)))
            train_s += time.perf_counter() - t0
            loop.state.save()
        if not single:
            held_out = [f for f in loop.files if loop.folds[f.stem] == k]
            frame, predicted, seconds = loop.predict([checkpoint_of(Path(this["students"][str(k)]))], held_out)
            frames.append(frame)
            label_s += seconds
    this["members"] = [checkpoint_of(Path(p)) for p in this["students"].values()]
    if frames:
        write_round(loop.folder, r, pd.concat(frames, ignore_index=True), predicted, this)
    this["row"] = {**round_row(r, [Path(p) for p in this["students"].values()], windows // st.folds),
                   "power": power, "train_seconds": round(train_s, 1), "label_seconds": round(label_s, 1),
                   **loop.scores(this["members"])}
    this["done"] = True
    loop.state.save()


def rescore_blend(loop: Loop, r: int) -> None:
    """A finished round scored without the teacher blend this config asks for (a loop made before it, or with
    another ``teacher_blend``): its scores again, so ``--resume-loop`` on a finished loop fills them in."""
    kind, this = loop.cfg.self_training.teacher_blend, loop.state.round(r)
    row = this.get("row") or {}
    if loop.truth is None or kind == "off" or row.get("teacher_blend") == kind:
        return
    this["row"] = {**row, **loop.scores(this["members"])}
    loop.state.save()


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
                   teacher_classes: Sequence[str], source: Any, cfg: Config) -> dict[str, Any]:
    """On the labelled validation windows, over the classes the teacher predicts: the round's ensemble, the raw
    teacher and (``[self_training] teacher_blend``) their blend, cross-fitted (:mod:`training.teacher_blend`);
    empty without labelled soundscape windows."""
    if truth is None or not teacher_classes:
        return {}
    scored = [c for c in teacher_classes if c in truth.columns]
    per_member = [window_predictions([m], truth, source.data_dir, cfg.data.window_s) for m in members]
    stacked = stack_members([f for f, _ in per_member], truth["row_id"], truth.columns[1:],
                            [p for _, p in per_member])
    ensemble = blend(stacked, len(members), [1.0] * len(members), "mean")  # predict.py's equal-weight ensemble
    out: dict[str, Any] = {"teacher_classes_soundscape_val": round(blend_score(truth, ensemble, truth.columns[1:],
                                                                               scored), 6)}
    if list(members) == list(teacher):
        out["raw_teacher_soundscape_val"] = out["teacher_classes_soundscape_val"]
        return out
    teacher_frame, _ = window_predictions(teacher, truth, source.data_dir, cfg.data.window_s)
    teacher_stack = stack_members([teacher_frame], truth["row_id"], truth.columns[1:], [teacher_classes])
    out["raw_teacher_soundscape_val"] = round(blend_score(truth, blend(teacher_stack, 1, [1.0], "mean"),
                                                          truth.columns[1:], scored), 6)
    if cfg.self_training.teacher_blend != "off":
        fit = fit_teacher_blend([f for f, _ in per_member], [p for _, p in per_member], teacher_frame,
                                teacher_classes, truth, cfg.self_training.teacher_blend, cfg.trainer.seed)
        out.update(blend_soundscape_val=round(fit.score, 6), blend_teacher_weight=fit.weight,
                   blend_cross_fitted=fit.cross_fitted, teacher_blend=fit.kind)
    return out


def write_blend(state: LoopState, kind: str) -> Optional[Path]:
    """``blend.json``: the last round's students with the teacher at the weight its labelled windows chose, and the
    ``predict.py`` command that runs that blend (None when the round has no blend: no labelled windows, or off)."""
    done = [r for r in state.rounds if r.get("done")]
    last = done[-1] if done else {}
    row = last.get("row") or {}
    if last.get("round", 0) < 1 or "blend_teacher_weight" not in row:
        return None
    students, teacher = list(last["members"]), list(state.rounds[0]["members"])
    fit = TeacherBlend(row["blend_teacher_weight"], row["blend_soundscape_val"], row["blend_cross_fitted"], kind)
    weights = fit.member_weights(len(students))
    data = {"round": last["round"], "members": [*students, *teacher], "weights": weights, "blend": kind,
            "blend_soundscape_val": fit.score, "cross_fitted": fit.cross_fitted,
            "students_soundscape_val": row.get("teacher_classes_soundscape_val"),
            "raw_teacher_soundscape_val": row.get("raw_teacher_soundscape_val"),
            "predict": " ".join(["python predict.py --checkpoint", *students, *teacher, "--blend", kind,
                                 "--weights", *[f"{w:g}" for w in weights]])}
    path = state.folder / "blend.json"
    atomic_write_text(path, json.dumps(data, indent=1))
    log.info("self-training: round %d's students with the teacher at weight %.2f (%s blend): %.4f on the labelled "
             "windows (students %.4f, teacher %.4f) -> %s", last["round"], fit.weight, kind, fit.score,
             row.get("teacher_classes_soundscape_val", float("nan")),
             row.get("raw_teacher_soundscape_val", float("nan")), path)
    return path


def write_table(state: LoopState) -> pd.DataFrame:
    """``rounds.csv`` and ``rounds.png`` of the finished rounds."""
    table = pd.DataFrame([r["row"] for r in state.rounds if r.get("done")])
    table.to_csv(state.folder / "rounds.csv", index=False)
    plot_rounds(table, state.folder / "rounds.png")
    return table
