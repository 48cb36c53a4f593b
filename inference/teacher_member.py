"""A foundation model's own logits as an ensemble member: ``predict.py --checkpoint best.pt teacher:birdnet``.

The member sees the same embedding windows as an embedding head (one decode per file, the embedding front end
computed once for every member that takes it); its classes are the competition's classes the model maps onto (by
eBird code, else scientific name through the competition's taxonomy), so the ensemble averages each class only over
the members that predict it. ``teacher:<model>:<path>`` names the model's file (``teacher:perch:/kaggle/input/...``).
A model whose logits are a linear map of its embedding (BirdNET) shares the embedding front end with the heads and
recomputes its logits from it; any other (Perch) gets a front end of its own that keeps the model's logits per row.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from utils.checkpoints import ModelMeta

TEACHER_PREFIX = "teacher:"


def is_teacher(spec: str | Path) -> bool:
    """Whether an ensemble member is ``teacher:<embedding model>`` rather than a model file."""
    return str(spec).startswith(TEACHER_PREFIX)


def teacher_member(spec: str | Path, classes: Sequence[str], data_dir: str | Path
                   ) -> tuple[ModelMeta, Callable[[np.ndarray], np.ndarray]]:
    """(the member's metadata, runner) of ``teacher:<name>`` for the competition's ``classes``."""
    from dataloader.embedding_input import embedding_settings  # noqa: PLC0415
    from dataloader.features import make_frontend  # noqa: PLC0415
    from dataloader.label_map import map_labels, scientific_names  # noqa: PLC0415
    from dataloader.standardize import Standardizer  # noqa: PLC0415

    from dataloader.embedders import embedder_spec  # noqa: PLC0415

    parsed = embedder_spec(str(spec)[len(TEACHER_PREFIX):])
    if parsed is None:
        raise ValueError(f"{spec}: teacher:<embedding model>[:<model path>] (birdnet, perch, ...)")
    name, model_path = parsed
    settings = embedding_settings(name, model_path, 5.0)
    model = make_frontend(settings).model
    linear = model.logits_from_embeddings(np.zeros((1, model.dim), np.float32)) is not None
    if not linear:
        settings = embedding_settings(name, model_path, 5.0, output="logits")
    mapping = map_labels(model.labels, classes, scientific_names(data_dir))
    if not mapping.index:
        raise ValueError(f"{spec}: none of the {len(classes)} classes maps onto {name}'s labels (by eBird code or "
                         f"scientific name); it would predict nothing")
    mapped = [c for c in classes if c in mapping.index]
    columns = np.array([mapping.index[c] for c in mapped])
    meta = ModelMeta(labels=tuple(mapped), model_name=name, data_process=vars(settings), window_s=5.0,
                     standardizer=Standardizer.identity(settings.dim).to_dict(), input="embedding", pad_mode="repeat",
                     activation="sigmoid", classes=tuple(mapped))

    def run(batch: np.ndarray) -> np.ndarray:
        features = np.asarray(batch, dtype=np.float32).mean(axis=-1).reshape(len(batch), -1)
        return (model.logits_from_embeddings(features) if linear else features)[:, columns]
    return meta, run
