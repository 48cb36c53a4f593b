"""The Kaggle BirdCLEF editions as a data source: recordings, classes, soundscapes and labelled soundscape windows.

One reader serves 2024 (``train_metadata.csv``), 2025 and 2026 (``train.csv`` + ``taxonomy.csv``; 2026 adds
``train_soundscapes_labels.csv``): the edition (:mod:`dataloader.sources.editions`) says which files to read.
Labels stay strings everywhere: 2025/2026 classes are eBird codes, iNaturalist taxon ids (``116570``) and
sonotype codes (``47158son01``).
"""
from __future__ import annotations

import ast
import logging
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from dataloader.audio import audio_files
from dataloader.sources.editions import COMPETITIONS, Edition, looks_like_kaggle, recognise_edition
from dataloader.sources.registry import DataSourceError, SourceData, check_columns, register_source
from utils.config_schema import DataConfig, PathsConfig

log = logging.getLogger(__name__)

GROUND_TRUTH_FILE = "test_soundscapes_ground_truth.csv"  # per-window solution of the demo's test soundscapes
TAXONOMY_ALIAS_COLUMNS = ("inat_taxon_id", "scientific_name", "common_name")  # other names of a class
# <site>_<YYYYMMDD>_<HHMMSS> at the end of a soundscape name: H02_20230420_074000 (2025),
# BC2026_Train_0001_S08_20250606_030007 (2026)
_SOUNDSCAPE_NAME = re.compile(r"(?:^|_)(?P<site>[A-Za-z]+\d+)_(?P<date>\d{8})_(?P<time>\d{6})$")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV with every value as a string (labels like ``116570`` must never become numbers)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def parse_list(value: object, where: str) -> list[str]:
    """A Python-list string (``"['call', 'song']"``, ``"[]"``) as a list of str, read with ``ast.literal_eval``."""
    if isinstance(value, list):
        return [str(v) for v in value]
    text = "" if value is None else str(value).strip()
    if text in ("", "nan"):
        return []
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DataSourceError(f"{where}: {value!r} is not a list string like \"['call']\"") from None
    if not isinstance(parsed, (list, tuple)):
        raise DataSourceError(f"{where}: {value!r} is not a list")
    return [str(v) for v in parsed]


def submission_labels(data_dir: str | Path) -> list[str]:
    """Species columns of ``sample_submission.csv``, in its order (the submission's column order), as strings."""
    path = Path(data_dir) / "sample_submission.csv"
    if not path.is_file():
        raise DataSourceError(f"{path} not found; the submission's columns come from it")
    columns = [str(c) for c in pd.read_csv(path, nrows=0, dtype=str).columns]
    if not columns or columns[0] != "row_id":
        raise DataSourceError(f"{path}: first column must be row_id, found {columns[:1]}")
    return columns[1:]


def taxonomy_aliases(taxonomy: pd.DataFrame, classes: Iterable[str]) -> dict[str, str]:
    """Every name a class goes by -> the class: the class itself and, where ``taxonomy.csv`` has them, its
    iNaturalist taxon id, scientific and common name (2026 secondary labels may use those)."""
    classes = set(classes)
    aliases = {c: c for c in classes}
    if "primary_label" not in taxonomy:
        return aliases
    for column in TAXONOMY_ALIAS_COLUMNS:
        if column not in taxonomy:
            continue
        for label, alias in zip(taxonomy["primary_label"], taxonomy[column]):
            alias = str(alias).strip()
            alias = alias[:-2] if alias.endswith(".0") and alias[:-2].isdigit() else alias  # 116570.0 -> 116570
            if label in classes and alias and alias not in aliases:
                aliases[alias] = label
    return aliases


def map_labels(values: list[str], aliases: dict[str, str], unknown: Counter) -> list[str]:
    """``values`` mapped to class names (order kept, duplicates dropped); the others are counted in ``unknown``."""
    out: list[str] = []
    for value in values:
        label = aliases.get(value.strip())
        if label is None:
            unknown[value.strip()] += 1
        elif label not in out:
            out.append(label)
    return out


def read_recordings(data_dir: Path, edition: Edition) -> pd.DataFrame:
    """The edition's recordings table (``train_metadata.csv`` or ``train.csv``) with the pipeline's columns, plus
    ``rating`` (float; 0 = unrated) and ``collection`` (XC, iNat, CSA; empty when the edition has none)."""
    path = data_dir / edition.metadata
    meta = read_table(path)
    check_columns(meta, ("primary_label", "secondary_labels", "filename"), str(path))
    table = pd.DataFrame({
        "filename": meta["filename"],
        "primary_label": meta["primary_label"].str.strip(),
        "secondary_labels": [parse_list(v, f"{path} row {i + 2}, secondary_labels")
                             for i, v in enumerate(meta["secondary_labels"])],
    })
    table["extra_labels"] = [[] for _ in range(len(table))]
    table["path"] = [str(data_dir / "train_audio" / f) for f in table["filename"]]
    table["group"] = [Path(f).stem for f in table["filename"]]  # the recording id (XC134896): one audio, one group
    table["rating"] = pd.to_numeric(meta.get("rating", pd.Series([""] * len(meta))), errors="coerce").fillna(0.0)
    table["collection"] = meta["collection"] if "collection" in meta else ""
    return table


def filter_min_rating(table: pd.DataFrame, min_rating: float) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Recordings rated below ``min_rating`` left out; rating 0 means *unrated* (every iNat and CSA recording,
    some xeno-canto ones) and is kept. Returns the table and a report: dropped per class, and the classes left
    with no recording."""
    if min_rating <= 0:
        return table, {}
    low = (table["rating"] > 0) & (table["rating"] < min_rating)
    per_class = table.loc[low, "primary_label"].value_counts()
    kept = table[~low].reset_index(drop=True)
    lost = sorted(set(table["primary_label"]) - set(kept["primary_label"]))
    log.info("min_rating %g: %d recordings left out (%s)%s", min_rating, int(low.sum()),
             ", ".join(f"{c} -{n}" for c, n in per_class.items()) or "none",
             f"; classes with no recording left: {', '.join(lost)}" if lost else "")
    return kept, {"min_rating": min_rating, "rating_dropped": int(low.sum()),
                  "rating_dropped_per_class": {str(c): int(n) for c, n in per_class.items()},
                  "classes_lost_to_min_rating": lost}


def parse_soundscape_name(name: str) -> dict[str, Any]:
    """``site``, ``date`` (YYYY-MM-DD) and ``hour`` from a 2025/2026 soundscape name; empty when it does not
    parse (the row is kept)."""
    empty = {"site": "", "date": "", "hour": None}
    match = _SOUNDSCAPE_NAME.search(Path(name).stem)
    if not match:
        return empty
    try:
        stamp = datetime.strptime(match["date"] + match["time"], "%Y%m%d%H%M%S")
    except ValueError:  # digits in the right places, but no such date or time
        return empty
    return {"site": match["site"], "date": stamp.strftime("%Y-%m-%d"), "hour": stamp.hour}


def soundscape_table(folder: Path) -> pd.DataFrame:
    """The audio files of a soundscape folder with ``site``, ``date`` and ``hour`` parsed from their names."""
    rows = [{"path": str(p), "filename": p.name, **parse_soundscape_name(p.name)} for p in audio_files(folder)]
    return pd.DataFrame(rows, columns=["path", "filename", "site", "date", "hour"])


def _seconds(value: str, where: str) -> float:
    """``HH:MM:SS`` (or plain seconds) as seconds."""
    text = str(value).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            return sum(p * 60 ** k for k, p in enumerate(reversed(parts)))
        return float(text)
    except ValueError:
        raise DataSourceError(f"{where}: {value!r} is not a time like 00:00:05") from None


def read_soundscape_windows(path: Path, audio_dir: Path, aliases: dict[str, str]
                            ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Labelled soundscape windows (2026's ``train_soundscapes_labels.csv``: ``filename``, ``start``/``end`` as
    ``HH:MM:SS``, ``primary_label`` with several labels joined by ``;``): duplicate rows merged (labels unioned),
    labels mapped to classes (unknown ones counted), windows of missing files left out and counted."""
    raw = read_table(path)
    check_columns(raw, ("filename", "start", "end", "primary_label"), str(path))
    unknown: Counter = Counter()
    merged: dict[tuple[str, float, float], list[str]] = {}
    for i, row in raw.iterrows():
        where = f"{path} row {i + 2}"
        start, end = _seconds(row["start"], where), _seconds(row["end"], where)
        if end <= start:
            raise DataSourceError(f"{where}: end {row['end']} is not after start {row['start']}")
        labels = map_labels([p for p in str(row["primary_label"]).split(";") if p.strip()], aliases, unknown)
        key = (str(row["filename"]).strip(), start, end)
        merged[key] = merged.get(key, []) + [lbl for lbl in labels if lbl not in merged.get(key, [])]
    rows = [{"path": str(audio_dir / f), "filename": f, "start_s": s, "end_s": e, "labels": labels,
             "group": f"soundscape:{Path(f).stem}"} for (f, s, e), labels in sorted(merged.items())]
    windows = pd.DataFrame(rows, columns=["path", "filename", "start_s", "end_s", "labels", "group"])
    present = np.array([Path(p).is_file() for p in windows["path"]], dtype=bool)
    missing = sorted(set(windows.loc[~present, "filename"]))
    windows = windows[present & (windows["labels"].map(len) > 0)].reset_index(drop=True)
    report = {"soundscape_label_rows": len(raw), "soundscape_windows": len(windows),
              "soundscape_duplicate_rows_merged": len(raw) - len(merged),
              "soundscape_files_labelled": int(windows["filename"].nunique()),
              "soundscape_files_missing": missing,
              "unknown_soundscape_labels": dict(unknown.most_common())}
    log.info("labelled soundscapes %s: %d windows of %d files (%d duplicate rows merged)%s%s", path.name,
             len(windows), report["soundscape_files_labelled"], report["soundscape_duplicate_rows_merged"],
             f"; {len(missing)} files missing" if missing else "",
             f"; unknown labels {dict(unknown)}" if unknown else "")
    return windows, report


def read_birdclef(data_dir: str | Path, edition: str = "auto", min_rating: float = 0.0, name: str = "",
                  is_demo: bool = False) -> SourceData:
    """Everything of a BirdCLEF data folder of ``edition`` (``auto``: recognised from its files)."""
    data_dir = Path(data_dir)
    ed = recognise_edition(data_dir, edition)
    classes = submission_labels(data_dir)
    taxonomy = read_table(data_dir / ed.taxonomy)
    if "primary_label" in taxonomy and list(taxonomy["primary_label"]) != classes:
        log.warning("%s: its order differs from sample_submission.csv; the submission follows "
                    "sample_submission.csv", ed.taxonomy)
    aliases = taxonomy_aliases(taxonomy, classes)
    table = read_recordings(data_dir, ed)
    report: dict[str, Any] = {"edition": ed.name}
    unknown_primary = sorted(set(table["primary_label"]) - set(classes))
    if unknown_primary:
        raise DataSourceError(f"{data_dir / ed.metadata}: primary labels not in sample_submission.csv: "
                              f"{', '.join(unknown_primary[:10])}")
    unknown: Counter = Counter()
    table["secondary_labels"] = [[s for s in map_labels(values, aliases, unknown) if s != primary]
                                 for values, primary in zip(table["secondary_labels"], table["primary_label"])]
    report["unknown_secondary_labels"] = dict(unknown.most_common())
    if unknown:
        log.info("secondary labels matching no class (counted, not trained): %d values, %d occurrences: %s",
                 len(unknown), sum(unknown.values()), ", ".join(f"{k} x{v}" for k, v in unknown.most_common(10)))
    table, rating_report = filter_min_rating(table, min_rating)
    report.update(rating_report)
    soundscape_dir = data_dir / ed.soundscape_dir
    windows = None
    if ed.soundscape_labels:
        windows, window_report = read_soundscape_windows(data_dir / ed.soundscape_labels, soundscape_dir, aliases)
        report.update(window_report)
    focal = set(table["primary_label"])
    in_windows = {lbl for labels in (windows["labels"] if windows is not None else []) for lbl in labels}
    report["classes"] = len(classes)
    report["classes_without_focal_audio"] = sorted(set(classes) - focal)
    report["classes_only_in_soundscapes"] = sorted(in_windows - focal)
    truth = data_dir / GROUND_TRUTH_FILE
    log.info("BirdCLEF %s data in %s: %d recordings of %d classes (%d submission columns, %d without focal audio)",
             ed.name, data_dir, len(table), len(focal), len(classes), len(report["classes_without_focal_audio"]))
    return SourceData(name=name or f"birdclef-{ed.name}", data_dir=data_dir, recordings=table, classes=classes,
                      audio_root=data_dir / "train_audio", soundscape_dir=soundscape_dir,
                      test_dir=data_dir / "test_soundscapes", soundscapes=soundscape_table(soundscape_dir),
                      windows=windows, ground_truth=truth if truth.is_file() else None, is_demo=is_demo,
                      report=report)


@register_source("birdclef", recognise=looks_like_kaggle)
def birdclef_source(data: DataConfig, paths: PathsConfig) -> SourceData:
    """Kaggle BirdCLEF data in ``[paths] data_dir`` (2024, 2025 or 2026, recognised from the files)."""
    data_dir = Path(paths.data_dir)
    if not looks_like_kaggle(data_dir):
        raise DataSourceError(f"[data] source = birdclef but {data_dir} holds no BirdCLEF data: run "
                              f"./download_data.sh {data.competition} first (Kaggle credentials needed), or set "
                              f"[data] source = auto to use the demo")
    result = read_birdclef(data_dir, data.edition, data.min_rating)
    expected = COMPETITIONS[data.competition].edition
    if result.report["edition"] != expected:
        log.warning("[data] competition = %s (edition %s) but %s holds edition %s data; reading it as %s",
                    data.competition, expected, data_dir, result.report["edition"], result.report["edition"])
    return result
