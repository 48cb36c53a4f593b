"""The archive's embedding database, in perch-hoplite's own format: a folder holding ``hoplite.sqlite`` (deployments,
recordings, windows, annotations, metadata) and ``usearch.index`` (the window vectors), written through hoplite's
package, so the same folder opens in hoplite's notebooks and in BirdNET-Analyzer's search.

Layout of an archive in it: the deployment of a recording is its first folder under the audio root (the site; the
root itself for files directly in it), the project is the root's name, a window's offsets are its start and end
seconds. The vectors are the model's raw embeddings, indexed for cosine similarity. What this pipeline needs to
embed more files or queries the same way (model, its file's identity, window, hop, sample rate, dimension, audio
root) is the metadata key ``birdclef_pipeline_archive``; hoplite's ``model_config`` and ``audio_sources`` keys and,
for BirdNET, BirdNET-Analyzer's ``birdnet_analyzer_settings`` are written beside it.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ARCHIVE_KEY = "birdclef_pipeline_archive"
SQLITE_FILE, INDEX_FILE = "hoplite.sqlite", "usearch.index"
VECTOR_DTYPE = "float16"  # hoplite's default: half the index of float32, search unchanged at 3 decimals


class ArchiveError(RuntimeError):
    """A database that cannot be opened as asked (missing, of another model, or damaged)."""


@dataclass(frozen=True)
class ArchiveSettings:
    """How the windows of an archive were embedded: what embeds more files, or a query, the same way."""

    model: str  # the embedder: birdnet, perch, onnx:<file>, checkpoint:<file> (see archive.window_embedders)
    identity: str  # the model file's identity (name, size, time): another file is another vector space
    sample_rate: int
    window_s: float
    hop_s: float
    dim: int
    audio_root: str
    project: str

    def to_metadata(self) -> dict[str, Any]:
        """A plain dict (hoplite stores metadata as JSON)."""
        return asdict(self)

    @classmethod
    def from_metadata(cls, value: Any) -> "ArchiveSettings":
        """From the stored metadata (a ConfigDict or a dict)."""
        return cls(**{f.name: value[f.name] for f in fields(cls)})

    def differences(self, other: "ArchiveSettings") -> list[str]:
        """The settings that make ``other``'s vectors incomparable with these (empty: the same space)."""
        keys = ("model", "identity", "sample_rate", "window_s", "hop_s", "dim")
        return [f"{k} {getattr(self, k)!r} != {getattr(other, k)!r}" for k in keys
                if getattr(self, k) != getattr(other, k)]


def usearch_config(dim: int, expansion_add: Optional[int] = None) -> Any:
    """hoplite's USearch settings for ``dim``-dimensional vectors, with the cosine metric: raw embeddings stay
    stored as they are (a classifier trains on them), search ranks by angle. ``expansion_add``: the HNSW graph's
    breadth while adding (hoplite's 256 by default; lower adds faster, for a synthetic million-window index)."""
    from perch_hoplite.db.sqlite_usearch_impl import get_default_usearch_config  # noqa: PLC0415

    cfg = get_default_usearch_config(dim)
    cfg.metric_name = "Cos"
    cfg.dtype = VECTOR_DTYPE
    if expansion_add:
        cfg.expansion_add = int(expansion_add)
    return cfg


def hoplite_metadata(settings: ArchiveSettings) -> dict[str, dict[str, Any]]:
    """The metadata keys hoplite's own tools (``model_config``, ``audio_sources``) and, for BirdNET,
    BirdNET-Analyzer's search (``birdnet_analyzer_settings``) read from a database."""
    name = settings.model.split(":", 1)[0]
    key = {"birdnet": "birdnet", "perch": "perch_v2_onnx"}.get(name, "birdclef_pipeline")
    model_config: dict[str, Any] = {"window_size_s": settings.window_s, "hop_size_s": settings.hop_s,
                                    "sample_rate": settings.sample_rate, "model_path": settings.model}
    if name == "birdnet":
        model_config["class_list_name"] = "birdnet_v2_4"
    out = {"model_config": {"model_key": key, "embedding_dim": settings.dim, "model_config": model_config,
                            "logits_key": None, "logits_idxes": None},
           "audio_sources": {"audio_globs": [{"dataset_name": settings.project, "base_path": settings.audio_root,
                                              "file_glob": "**/*", "min_audio_len_s": 0.0,
                                              "target_sample_rate_hz": -2, "shard_len_s": None,
                                              "max_shards_per_file": None}]}}
    if name == "birdnet":
        out["birdnet_analyzer_settings"] = {"BANDPASS_FMIN": 0, "BANDPASS_FMAX": 15000, "AUDIO_SPEED": 1.0,
                                            "OVERLAP": round(settings.window_s - settings.hop_s, 6)}
    return out


def open_archive(path: str | Path, settings: Optional[ArchiveSettings] = None, readonly: bool = False,
                 expansion_add: Optional[int] = None) -> Any:
    """The hoplite database (``SQLiteUSearchDB``) in folder ``path``: created with ``settings`` when it does not
    exist; an existing one must hold vectors of the same model, window and hop as ``settings`` (when given). Windows
    whose vectors never reached the index (a build killed between the SQLite commit and the index save) are
    removed with their recordings, which the next build embeds again. ``expansion_add``: see
    :func:`usearch_config` (a new database only)."""
    from ml_collections import config_dict  # noqa: PLC0415
    from perch_hoplite.db.sqlite_usearch_impl import SQLiteUSearchDB  # noqa: PLC0415

    logging.getLogger("absl").setLevel(logging.WARNING)  # hoplite logs every SQL statement at INFO
    path = Path(path)
    exists = (path / SQLITE_FILE).is_file()
    if not exists and (settings is None or readonly):
        raise ArchiveError(f"{path}: no embedding database here (expected {SQLITE_FILE} and {INDEX_FILE}); "
                           f"build one with python -m archive.build")
    if exists:
        db = SQLiteUSearchDB.create(str(path), readonly=readonly)
        stored = settings_of(db)
        if settings is not None and stored.differences(settings):
            raise ArchiveError(f"{path} holds vectors of another model or windowing "
                               f"({'; '.join(stored.differences(settings))}); use another database folder")
        if not readonly:
            repair(db)
        return db
    db = SQLiteUSearchDB.create(str(path), usearch_cfg=usearch_config(settings.dim, expansion_add))
    db.insert_metadata(ARCHIVE_KEY, config_dict.ConfigDict(settings.to_metadata()))
    for key, value in hoplite_metadata(settings).items():
        db.insert_metadata(key, config_dict.ConfigDict(value))
    db.commit()
    return db


def settings_of(db: Any) -> ArchiveSettings:
    """The archive settings stored in ``db``; a hoplite database made elsewhere lacks them (said as such)."""
    try:
        return ArchiveSettings.from_metadata(db.get_metadata(ARCHIVE_KEY))
    except KeyError:
        raise ArchiveError(f"{db.db_path}: a hoplite database without this pipeline's {ARCHIVE_KEY!r} metadata "
                           f"(made by another tool): its model and windowing are unknown here") from None


def repair(db: Any) -> list[str]:
    """Remove the recordings whose windows lack a vector in the index; returns their file names."""
    ids = np.array([r[0] for r in db.db.execute("SELECT id FROM windows")], dtype=np.uint64)
    if not len(ids):
        return []
    missing = ids[~np.asarray(db.ui.contains(ids), dtype=bool)]
    if not len(missing):
        return []
    marks = ",".join("?" * min(len(missing), 900))
    rows = db.db.execute(f"SELECT DISTINCT r.id, r.filename FROM windows w JOIN recordings r ON r.id = "
                         f"w.recording_id WHERE w.id IN ({marks})", [int(m) for m in missing[:900]]).fetchall()
    for recording_id, _ in rows:
        db.remove_recording(int(recording_id))
    db.commit()
    names = [name for _, name in rows]
    log.warning("%s: %d windows had no vector (a build stopped between saving the table and the index); their "
                "%d recordings will be embedded again: %s", db.db_path, len(missing), len(names), ", ".join(names[:5]))
    return names


def recording_ids(db: Any) -> dict[str, int]:
    """File name (relative to the audio root) -> recording id."""
    return {name: int(i) for i, name in db.db.execute("SELECT id, filename FROM recordings")}


def windows_frame(db: Any, window_ids: Optional[Iterable[int]] = None) -> pd.DataFrame:
    """``window_id, recording_id, file, start_s, end_s`` of every window (or of ``window_ids``, in their order)."""
    query = ("SELECT w.id, w.recording_id, r.filename, w.offsets FROM windows w JOIN recordings r "
             "ON r.id = w.recording_id")
    if window_ids is None:
        rows = db.db.execute(query + " ORDER BY w.id").fetchall()
    else:
        wanted = [int(i) for i in window_ids]
        rows = []
        for k in range(0, len(wanted), 900):  # SQLite's limit on bound parameters
            part = wanted[k:k + 900]
            rows += db.db.execute(query + f" WHERE w.id IN ({','.join('?' * len(part))})", part).fetchall()
        order = {w: k for k, w in enumerate(wanted)}
        rows.sort(key=lambda r: order[r[0]])
    frame = pd.DataFrame([(r[0], r[1], r[2], float(r[3][0]), float(r[3][1])) for r in rows],
                         columns=["window_id", "recording_id", "file", "start_s", "end_s"])
    return frame.astype({"window_id": np.int64, "recording_id": np.int64})


def vectors(db: Any, window_ids: Sequence[int]) -> np.ndarray:
    """(len(window_ids), dim) float32 embeddings from the index."""
    if not len(window_ids):
        return np.zeros((0, db.get_embedding_dim()), dtype=np.float32)
    return np.asarray(db.get_embeddings_batch(np.asarray(window_ids, dtype=np.uint64)), dtype=np.float32)
