"""The demo's file layout per BirdCLEF edition: file names, CSV headers, label kinds, soundscape names.

Data, not code paths: :func:`dataloader.demo.generate_demo` writes every edition with the same steps, and a
:class:`DemoLayout` says what differs (2024: ``train_metadata.csv`` and eBird codes; 2025: ``train.csv`` +
``taxonomy.csv``, iNaturalist taxon ids for the non-birds, ``train_soundscapes/``; 2026: 2025 plus
``train_soundscapes_labels.csv``, an insect sonotype and classes heard only in the labelled soundscapes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

TRAIN_METADATA_2024 = ("primary_label", "secondary_labels", "type", "latitude", "longitude", "scientific_name",
                       "common_name", "author", "license", "rating", "url", "filename")
TRAIN_CSV_2025 = ("primary_label", "secondary_labels", "type", "filename", "collection", "rating", "url",
                  "latitude", "longitude", "scientific_name", "common_name", "author", "license")
EBIRD_TAXONOMY = ("TAXON_ORDER", "CATEGORY", "SPECIES_CODE", "PRIMARY_COM_NAME", "SCI_NAME", "ORDER1", "FAMILY",
                  "SPECIES_GROUP", "REPORT_AS")
TAXONOMY_2025 = ("primary_label", "inat_taxon_id", "scientific_name", "common_name", "class_name")
SOUNDSCAPE_LABEL_COLUMNS = ("filename", "start", "end", "primary_label")

# Non-birds are filed under iNaturalist taxon ids (2025) and, for insects, sonotype codes (2026).
NON_BIRDS_2025 = {"harhoo": ("116570", "Amphibia"), "lowowl": ("1139490", "Mammalia"), "buzpri": ("47144", "Insecta")}
# Heard only in the labelled train soundscapes of 2026 (no focal recording), as about 28 of 234 classes are.
SOUNDSCAPE_ONLY_2026 = {"sonins": ("47158son01", "Insecta"), "pulfro": ("24279", "Amphibia")}


@dataclass(frozen=True)
class DemoLayout:
    """What one edition's demo folder looks like."""

    edition: str
    metadata_file: str
    metadata_columns: tuple[str, ...]
    taxonomy_file: str
    soundscape_dir: str  # unlabeled (2024) or train (2025/2026) soundscapes
    non_birds: dict[str, tuple[str, str]] = field(default_factory=dict)  # species code -> (label, class_name)
    soundscape_only: dict[str, tuple[str, str]] = field(default_factory=dict)
    collections: bool = False  # XC / iNat / CSA recordings with their file-name prefixes
    secondary_aliases: bool = False  # some secondary labels given by iNat taxon id instead of the class code
    labelled_soundscapes: int = 0  # train soundscapes with a train_soundscapes_labels.csv
    train_soundscape_name: str = "{n}"  # str.format fields: n, site, date, time
    test_soundscape_name: str = "soundscape_{n}"
    train_first_n: int = 200000  # n of the first train / unlabeled soundscape
    test_first_n: int = 100000
    test_lengths: tuple[float, ...] = (60.0, 123.4, 180.0, 240.0, 97.3, 150.0)
    unlabeled_lengths: tuple[float, ...] = (39.25, 90.0, 60.0)

    def label(self, code: str) -> str:
        """The class name of the synthetic species ``code`` in this edition."""
        return {**self.non_birds, **self.soundscape_only}.get(code, (code, ""))[0]

    def class_name(self, code: str) -> str:
        return {**self.non_birds, **self.soundscape_only}.get(code, ("", "Aves"))[1]


LAYOUTS: dict[str, DemoLayout] = {layout.edition: layout for layout in (
    DemoLayout("2024", "train_metadata.csv", TRAIN_METADATA_2024, "eBird_Taxonomy_v2021.csv", "unlabeled_soundscapes",
               train_soundscape_name="{n}", test_soundscape_name="soundscape_{n}"),
    DemoLayout("2025", "train.csv", TRAIN_CSV_2025, "taxonomy.csv", "train_soundscapes", NON_BIRDS_2025,
               collections=True, train_soundscape_name="H{site:02d}_{date}_{time}",
               test_soundscape_name="soundscape_{n}", test_lengths=(60.0,) * 9 + (47.5,),
               unlabeled_lengths=(60.0,) * 6),
    DemoLayout("2026", "train.csv", TRAIN_CSV_2025, "taxonomy.csv", "train_soundscapes", NON_BIRDS_2025,
               SOUNDSCAPE_ONLY_2026, collections=True, secondary_aliases=True, labelled_soundscapes=24,
               train_soundscape_name="BC2026_Train_{n:04d}_S{site:02d}_{date}_{time}",
               test_soundscape_name="BC2026_Test_{n:04d}_S{site:02d}_{date}_{time}", train_first_n=1, test_first_n=1,
               test_lengths=(60.0,) * 9 + (47.5,), unlabeled_lengths=(60.0,) * 3),
)}


def soundscape_name(template: str, n: int, rng: Any) -> str:
    """A soundscape file stem from ``template``: a site and a recording date and time drawn with ``rng``."""
    site = int(rng.integers(1, 24))
    day = int(rng.integers(1, 29))
    month = int(rng.integers(1, 13))
    hour, minute = int(rng.integers(0, 24)), int(rng.integers(0, 6)) * 10
    return template.format(n=n, site=site, date=f"2025{month:02d}{day:02d}", time=f"{hour:02d}{minute:02d}00")


def hhmmss(seconds: float) -> str:
    """``HH:MM:SS`` as 2026's soundscape labels write times."""
    s = int(round(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def soundscape_label_rows(name: str, truth: np.ndarray, labels: list[str]) -> list[dict]:
    """2026-style rows of one labelled soundscape: each 5-s window with a species, labels joined by ';'."""
    rows = []
    for w, row in enumerate(truth):
        present = [labels[j] for j in np.flatnonzero(row)]
        if present:
            rows.append({"filename": name, "start": hhmmss(5 * w), "end": hhmmss(5 * (w + 1)),
                         "primary_label": ";".join(present)})
    return rows


def taxonomy_rows(layout: DemoLayout, species: list[tuple[str, str]], inat_ids: dict[str, str]) -> list[dict]:
    """Taxonomy rows of (code, common name) pairs: eBird's v2021 columns (2024) or 2025's ``taxonomy.csv``."""
    if layout.taxonomy_file == "eBird_Taxonomy_v2021.csv":
        return [{"TAXON_ORDER": j + 1, "CATEGORY": "species", "SPECIES_CODE": code, "PRIMARY_COM_NAME": name,
                 "SCI_NAME": f"Synthetica {code}", "ORDER1": "Passeriformes", "FAMILY": "Synthetidae (Demo Birds)",
                 "SPECIES_GROUP": "Demo birds", "REPORT_AS": ""} for j, (code, name) in enumerate(species)]
    rows = [{"primary_label": layout.label(code), "inat_taxon_id": inat_ids[code],
             "scientific_name": f"Synthetica {code}", "common_name": name, "class_name": layout.class_name(code)}
            for code, name in species]
    return sorted(rows, key=lambda r: r["primary_label"])  # as Kaggle's: sorted as strings, digits first
