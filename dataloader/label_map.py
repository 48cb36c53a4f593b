"""A foundation model's classes mapped onto the competition's: by eBird code, else by scientific name through the
competition's taxonomy (``eBird_Taxonomy_v2021.csv`` for 2024: SPECIES_CODE / SCI_NAME; ``taxonomy.csv`` for
2025/2026: primary_label / scientific_name). BirdNET labels read ``Scientific name_Common name``; Perch's are eBird
codes or scientific names. Classes no model label matches (insects, frogs, iNat-only taxa, synthetic species) are
listed, never guessed."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

TAXONOMY_FILES = {"eBird_Taxonomy_v2021.csv": ("SPECIES_CODE", "SCI_NAME"),
                  "taxonomy.csv": ("primary_label", "scientific_name")}


def scientific_names(data_dir: str | Path) -> dict[str, str]:
    """class (eBird code / label) -> scientific name, from the competition folder's taxonomy (empty when none)."""
    for name, (code, sci) in TAXONOMY_FILES.items():
        path = Path(data_dir) / name
        if path.is_file():
            table = pd.read_csv(path, dtype=str)
            if {code, sci} <= set(table.columns):
                return {c: s for c, s in zip(table[code], table[sci]) if isinstance(s, str)}
    return {}


def _key(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").split())


@dataclass
class LabelMap:
    """Which model output each competition class takes (``index``) and how it was matched (``by``)."""

    classes: list[str]
    index: dict[str, int] = field(default_factory=dict)
    by: dict[str, str] = field(default_factory=dict)

    @property
    def unmapped(self) -> list[str]:
        return [c for c in self.classes if c not in self.index]

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """(n, model classes) logits -> (n, competition classes) probabilities (sigmoid; 0 for unmapped classes)."""
        out = np.zeros((len(logits), len(self.classes)), dtype=np.float32)
        for j, c in enumerate(self.classes):
            if c in self.index:
                out[:, j] = 1.0 / (1.0 + np.exp(-logits[:, self.index[c]]))
        return out

    def write(self, path: str | Path, model_labels: Sequence[str]) -> None:
        """The map as JSON: each mapped class with the model label and how it matched, and the unmapped classes."""
        Path(path).write_text(json.dumps({"mapped": {c: {"label": model_labels[i], "by": self.by[c]}
                                                     for c, i in self.index.items()},
                                          "unmapped": self.unmapped}, indent=1))


def map_labels(model_labels: Sequence[str], classes: Sequence[str], sci_names: Optional[dict[str, str]] = None
               ) -> LabelMap:
    """Match each competition class to a model label: the same code (``code``), or the same scientific name
    (``scientific_name``: the class's, from the taxonomy, against the model label's part before ``_``)."""
    by_code = {_key(label): i for i, label in enumerate(model_labels)}
    by_sci = {_key(label.split("_")[0]): i for i, label in enumerate(model_labels)}
    result = LabelMap(list(classes))
    for c in classes:
        if _key(c) in by_code:
            result.index[c], result.by[c] = by_code[_key(c)], "code"
        elif sci_names and c in sci_names and _key(sci_names[c]) in by_sci:
            result.index[c], result.by[c] = by_sci[_key(sci_names[c])], "scientific_name"
    return result
