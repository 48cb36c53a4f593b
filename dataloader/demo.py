"""Embedded demo dataset: synthetic species in the exact layout of a Kaggle BirdCLEF edition.

``generate_demo(folder, seed, edition="2024")`` writes, deterministically from ``seed``::

    train_audio/<label>/XC<id>.ogg        focal recordings, 32 kHz mono OGG Vorbis, 1-60 s
    train_metadata.csv                    the exact Kaggle header, list-string columns
    eBird_Taxonomy_v2021.csv              taxonomy of the synthetic species
    sample_submission.csv                 row_id + one column per species (sorted codes)
    unlabeled_soundscapes/*.ogg           soundscapes without labels
    test_soundscapes/*.ogg                1-4 minute soundscapes ...
    test_soundscapes_ground_truth.csv     ... and which species call in each 5-s window

and for ``edition = 2025`` / ``2026`` that edition's layout instead (``train.csv`` with collections XC / iNat /
CSA, ``taxonomy.csv``, numeric iNaturalist ids and a sonotype among the labels, one-minute test soundscapes,
``train_soundscapes/`` named by site, date and time; 2026 adds ``train_soundscapes_labels.csv`` and two classes
heard only in those soundscapes). :mod:`dataloader.demo_layouts` says what differs.

The species differ the way real ones do (band, FM shape, rhythm, harmonics, noisiness), several share
a band and differ only in shape or rhythm, so a front end or model that loses time-frequency detail
scores visibly worse.  Soundscapes differ from the focal recordings (distance filtering, overlapping
species, insect and rain backgrounds, empty windows), as real soundscapes do.
"""
from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from dataloader.demo_layouts import (
    LAYOUTS,
    SOUNDSCAPE_LABEL_COLUMNS,
    TRAIN_METADATA_2024,
    DemoLayout,
    soundscape_label_rows,
    soundscape_name,
    taxonomy_rows,
)
from dataloader.demo_sounds import SOUNDSCAPE_ONLY, SPECIES, write_recording, write_soundscape
from dataloader.sources.birdclef import GROUND_TRUTH_FILE
from utils.runtime import available_cores

log = logging.getLogger(__name__)

DEMO_VERSION = 6  # 6: noise filtered at fast FFT lengths (the same sounds, 2x faster to write)
COMPLETE_MARKER = ".demo_complete.json"
METADATA_COLUMNS = list(TRAIN_METADATA_2024)
_CALL_TYPES = (["call"], ["song"], ["call", "song"], ["flight call"])


# iNaturalist taxon id of every synthetic species (taxonomy.csv's inat_taxon_id; 2026 secondary labels use some).
INAT_IDS = {sp.code: str(10000 + 7 * i) for i, sp in enumerate(SPECIES + SOUNDSCAPE_ONLY)}


def _is_complete(folder: Path, stamp: dict) -> bool:
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()) == stamp
    except (OSError, ValueError):
        return False


def _recordings(folder: Path, layout: DemoLayout, rng: np.random.Generator, erng: np.random.Generator,
                scale: float, seed: int) -> tuple[list[dict], list[tuple]]:
    """Metadata rows (every column of every edition) and synthesis tasks of the focal recordings. ``rng`` draws
    what all editions share (the 2024 demo stays as it was), ``erng`` the later editions' extras."""
    rows, tasks = [], []
    xc_ids = rng.choice(np.arange(100000, 999999), size=10000, replace=False)
    k = 0
    for i, sp in enumerate(SPECIES):
        label = layout.label(sp.code)
        for _ in range(max(3, int(round(rng.integers(20, 46) * scale)))):
            length = float(np.exp(rng.uniform(np.log(1.0), np.log(60.0))))
            secondary = int(rng.choice([j for j in range(len(SPECIES)) if j != i])) if rng.random() < 0.3 else None
            xc = int(xc_ids[k])
            collection = "XC"
            if layout.collections:  # non-birds come mostly from iNaturalist, some from the CSA archive
                p = (0.2, 0.6, 0.2) if sp.code in layout.non_birds else (0.8, 0.2, 0.0)
                collection = str(erng.choice(["XC", "iNat", "CSA"], p=p))
            filename = f"{label}/{collection}{xc}.ogg"
            secondaries = [layout.label(SPECIES[secondary].code)] if secondary is not None else []
            if layout.secondary_aliases and secondaries and erng.random() < 0.4:
                secondaries = [INAT_IDS[SPECIES[secondary].code]]  # another code of the same class
            if layout.collections and erng.random() < 0.05:
                secondaries.append("grekis1")  # a species outside the competition's classes
            rows.append({
                "primary_label": label,
                "secondary_labels": str(secondaries),
                "type": str(_CALL_TYPES[int(rng.integers(len(_CALL_TYPES)))]),
                "latitude": round(float(rng.uniform(8.0, 21.0)), 4),
                "longitude": round(float(rng.uniform(73.0, 77.5)), 4),
                "scientific_name": f"Synthetica {sp.code}",
                "common_name": sp.common_name,
                "author": f"Demo Recordist {int(rng.integers(1, 40))}",
                "license": "Creative Commons Attribution-NonCommercial-ShareAlike 4.0",
                "rating": float(rng.integers(0, 11) / 2) * (collection == "XC"),  # iNat and CSA are unrated
                "url": {"XC": f"https://xeno-canto.org/{xc}", "iNat": f"https://static.inaturalist.org/sounds/{xc}.wav",
                        "CSA": f"https://csa.example.org/{xc}"}[collection],
                "filename": filename,
                "collection": collection,
            })
            tasks.append((str(folder / "train_audio" / filename), i, secondary, round(length, 3), [seed, k]))
            k += 1
    return rows, tasks


def generate_demo(folder: str | Path, seed: int = 2024, scale: float = 1.0, workers: int = 0,
                  edition: str = "2024", unlabeled: int = 0) -> Path:
    """Generate (or reuse, when complete and of the same seed/scale/edition) the demo dataset in ``folder``, in
    the file layout of BirdCLEF ``edition`` (2024, 2025 or 2026; see :mod:`dataloader.demo_layouts`).

    ``scale`` multiplies the number of recordings per species (1.0 ≈ 390 recordings, ~1.5 hours of audio).
    ``workers`` processes write the files (0: one per available core); every file has its own seed, so the
    audio and the tables are the same whatever the number of processes. ``unlabeled``: soundscapes without labels
    (0: the layout's few; a self-training pool wants more), the first ones the same as the default demo's.
    """
    folder = Path(folder)
    layout = LAYOUTS[edition]
    stamp = {"version": DEMO_VERSION, "seed": seed, "scale": scale, "edition": edition}
    if unlabeled:  # stamped only when asked: the default demo's stamp (and its reuse) stays as it was
        stamp["unlabeled"] = unlabeled
    if _is_complete(folder, stamp):
        log.info("demo dataset: reusing the complete %s demo in %s", edition, folder)
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rng, erng = np.random.default_rng(seed), np.random.default_rng([seed, int(edition)])
    rows, tasks = _recordings(folder, layout, rng, erng, scale, seed)
    extra = [sp for sp in SOUNDSCAPE_ONLY if sp.code in layout.soundscape_only]
    species = SPECIES + tuple(extra)
    boost = tuple(range(len(SPECIES), len(species)))
    share = min(1.0, scale * 2)
    test_lengths = layout.test_lengths[: max(2, int(round(len(layout.test_lengths) * share)))]
    n_labelled = max(4, int(round(layout.labelled_soundscapes * share))) if layout.labelled_soundscapes else 0
    unlabeled_lengths = (layout.unlabeled_lengths[: max(1, len(test_lengths) // 2)] if not unlabeled else
                         [layout.unlabeled_lengths[j % len(layout.unlabeled_lengths)] for j in range(unlabeled)])
    names = [soundscape_name(layout.test_soundscape_name, layout.test_first_n + j, erng)
             for j in range(len(test_lengths))]
    test = [(str(folder / "test_soundscapes" / f"{name}.ogg"), length, [seed, 50000 + j], species, boost)
            for j, (name, length) in enumerate(zip(names, test_lengths))]
    lengths = [60.0] * n_labelled + list(unlabeled_lengths)
    names = [soundscape_name(layout.train_soundscape_name, layout.train_first_n + j, erng) for j in range(len(lengths))]
    train_scapes = [(str(folder / layout.soundscape_dir / f"{name}.ogg"), length, [seed, 60000 + j], species, boost)
                    for j, (name, length) in enumerate(zip(names, lengths))]
    (folder / "test_soundscapes").mkdir()
    (folder / layout.soundscape_dir).mkdir()
    log.info("demo dataset: generating %d recordings and %d soundscapes in %s (BirdCLEF %s layout)", len(tasks),
             len(test) + len(train_scapes), folder, edition)
    with ProcessPoolExecutor(max_workers=workers or available_cores()) as pool:
        list(pool.map(write_recording, tasks, chunksize=4))
        truths = list(pool.map(write_soundscape, test + train_scapes))
    pd.DataFrame(rows, columns=list(layout.metadata_columns)).to_csv(folder / layout.metadata_file, index=False)
    codes = [(sp.code, sp.common_name) for sp in species]
    taxonomy = taxonomy_rows(layout, codes, INAT_IDS)
    pd.DataFrame(taxonomy).to_csv(folder / layout.taxonomy_file, index=False)
    labels = sorted(layout.label(sp.code) for sp in species)  # sample_submission order (= taxonomy.csv's)
    order = [labels.index(layout.label(sp.code)) for sp in species]  # species index -> submission column

    def to_columns(truth: np.ndarray) -> np.ndarray:
        out = np.zeros((len(truth), len(labels)), dtype=np.int8)
        out[:, order] = truth
        return out

    truth_rows = []
    for (path, *_), truth in zip(test, truths[: len(test)]):
        stem = Path(path).stem
        truth_rows += [[f"{stem}_{(w + 1) * 5}", *row.tolist()] for w, row in enumerate(to_columns(truth))]
    pd.DataFrame(truth_rows, columns=["row_id", *labels]).to_csv(folder / GROUND_TRUTH_FILE, index=False)
    if n_labelled:
        scape_rows = []
        for (path, *_), truth in zip(train_scapes[:n_labelled], truths[len(test):]):
            scape_rows += soundscape_label_rows(Path(path).name, to_columns(truth), labels)
        first = scape_rows[0]
        scape_rows.insert(1, dict(first))  # a duplicated row, as the real file has
        scape_rows.append({**scape_rows[-1], "primary_label": scape_rows[-1]["primary_label"].split(";")[0]})
        pd.DataFrame(scape_rows, columns=list(SOUNDSCAPE_LABEL_COLUMNS)).to_csv(
            folder / "train_soundscapes_labels.csv", index=False)
    first = Path(test[0][0]).stem
    sample = pd.DataFrame({"row_id": [f"{first}_{5 * (j + 1)}" for j in range(3)]})
    for label in labels:
        sample[label] = 1.0 / len(labels)
    sample.to_csv(folder / "sample_submission.csv", index=False)
    (folder / COMPLETE_MARKER).write_text(json.dumps(stamp))
    return folder
