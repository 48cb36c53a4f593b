"""The pieces of a self-training round: the unlabeled pool and its folds, the teacher, pool predictions, soft
targets, and the labelled validation windows a round and the raw teacher are both scored on
(:mod:`training.self_training` runs the loop)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from training.config import ConfigError
from utils.config_schema import Config


def powers(text: str) -> list[float]:
    """``[self_training] power``: ``"1, 1.5, 2"`` -> ``[1.0, 1.5, 2.0]`` (round 1 first)."""
    try:
        values = [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        raise ConfigError(f"[self_training] power = {text!r}: positive numbers, comma-separated (round 1 first)")
    return values


def round_power(values: Sequence[float], round_index: int) -> float:
    """The power of round ``round_index`` (>= 1): its own, or the last one given."""
    return values[min(round_index, len(values)) - 1]


def soft_targets(frame: pd.DataFrame, power: float, cap: float, predicted: Sequence[str]) -> pd.DataFrame:
    """``row_id`` + class columns of probabilities -> soft targets: ``min(p ** power, cap)``; a class not in
    ``predicted`` (no model predicts it) becomes NaN, which the losses leave out."""
    out = frame.copy()
    classes = [c for c in out.columns if c != "row_id"]
    known = [c for c in classes if c in set(predicted)]
    out[known] = np.minimum(np.power(out[known].to_numpy(np.float64).clip(0.0, 1.0), power), cap)
    unknown = [c for c in classes if c not in set(predicted)]
    if unknown:
        out[unknown] = np.nan
    return out


def pool_folds(files: Sequence[Path], folds: int, seed: int) -> dict[str, int]:
    """Each pool recording's fold (by file stem): the sorted stems dealt over ``folds`` folds in a seeded order."""
    stems = sorted({Path(f).stem for f in files})
    order = np.random.default_rng(seed).permutation(len(stems))
    return {stems[i]: rank % folds for rank, i in enumerate(order)}


def pool_recordings(cfg: Config, source: Any) -> list[Path]:
    """The unlabeled pool: ``pool_dir``'s recordings, or the source's soundscapes less those with labelled windows
    (a seeded sample of ``pool_files`` when set)."""
    from dataloader.audio import audio_files  # noqa: PLC0415

    st = cfg.self_training
    folder = Path(st.pool_dir) if st.pool_dir else source.soundscape_dir
    if folder is None or not Path(folder).is_dir():
        raise ConfigError(f"[self_training] pool_dir = {st.pool_dir!r}: no unlabeled pool (source {source.name} has no "
                          f"soundscape folder); set it to a folder of recordings")
    labelled = set(source.windows["filename"]) if source.windows is not None and len(source.windows) else set()
    files = [f for f in audio_files(folder) if f.name not in labelled]
    if st.pool_files and len(files) > st.pool_files:
        keep = np.random.default_rng(cfg.trainer.seed).choice(len(files), st.pool_files, replace=False)
        files = [files[i] for i in sorted(keep)]
    if len(files) < st.folds:
        raise ConfigError(f"[self_training] folds = {st.folds}: the pool {folder} holds {len(files)} recordings "
                          f"without labels; it needs at least one per fold")
    return files


def teacher_members(cfg: Config) -> list[str]:
    """Round 0's ensemble from ``[self_training] teacher``: a model file, or ``teacher:<embedding model>[:<path>]``."""
    from dataloader.embedders import embedder_spec, list_embedders  # noqa: PLC0415
    from inference.teacher_member import TEACHER_PREFIX  # noqa: PLC0415

    teacher = cfg.self_training.teacher
    if not teacher:
        return []
    if Path(teacher).is_file():
        return [teacher]
    if embedder_spec(teacher) is not None:
        return [TEACHER_PREFIX + teacher]
    raise ConfigError(f"[self_training] teacher = {teacher}: no such checkpoint, nor an embedding model; allowed: a "
                      f".pt / .onnx / .xml file, {', '.join(list_embedders())} (optionally <model>:<model path>, "
                      f"e.g. perch:/path/to/perch_v2_cpu/1), or empty (round 0 trains one)")


def predict_pool(members: Sequence[str], files: Sequence[Path], classes: Sequence[str], data_dir: str | Path,
                 row_s: float) -> tuple[pd.DataFrame, list[str]]:
    """(``row_id`` + ``classes`` probabilities of every ``row_s`` row of ``files``, the classes the ensemble
    predicts)."""
    from inference.file_pipeline import default_decode_threads  # noqa: PLC0415
    from inference.predict import SoundscapePredictor, predict_folder  # noqa: PLC0415

    predictor = SoundscapePredictor(list(members), row_s=row_s, classes=classes, data_dir=data_dir)
    frame = predict_folder(predictor, Path(files[0]).parent, classes, files=files,
                           decode_threads=default_decode_threads())
    return frame, [c for c in classes if c in set(predictor.labels)]


def file_stem(row_ids: pd.Series) -> pd.Series:
    """The soundscape stem of each ``<stem>_<end second>`` row id."""
    return row_ids.astype(str).str.rsplit("_", n=1).str[0]


def labelled_validation(cfg: Config, source: Any) -> pd.DataFrame | None:
    """``row_id`` + 0/1 class columns of the labelled soundscape windows the runs validate on (2026's
    ``soundscape_val_score`` windows), or None when the source has none."""
    from dataloader.soundscape_windows import split_windows  # noqa: PLC0415

    if source.windows is None or not len(source.windows):
        return None
    val = split_windows(source.windows, cfg.data.soundscape_labels, cfg.data.n_folds, cfg.data.fold,
                        cfg.data.split_seed)["val"]
    if not len(val):
        return None
    classes = list(source.classes or sorted({lbl for labels in val["labels"] for lbl in labels}))
    truth = pd.DataFrame(0, index=range(len(val)), columns=classes, dtype=np.int8)
    for r, labels in enumerate(val["labels"]):
        truth.loc[r, [lbl for lbl in labels if lbl in truth.columns]] = 1
    truth.insert(0, "row_id", [f"{Path(f).stem}_{int(round(e))}" for f, e in zip(val["filename"], val["end_s"])])
    truth.attrs["paths"] = sorted(set(val["path"]))
    return truth.drop_duplicates("row_id").reset_index(drop=True)


def window_predictions(members: Sequence[str], truth: pd.DataFrame, data_dir: str | Path,
                       row_s: float) -> tuple[pd.DataFrame, list[str]]:
    """(``row_id`` + probabilities of ``members``' ensemble on the labelled windows ``truth``, in its row order;
    the classes the ensemble predicts)."""
    paths = [Path(p) for p in truth.attrs["paths"]]
    frame, predicted = predict_pool(members, paths, list(truth.columns[1:]), data_dir, row_s)
    frame = frame.set_index("row_id").reindex(list(truth["row_id"])).reset_index()
    return frame, predicted

