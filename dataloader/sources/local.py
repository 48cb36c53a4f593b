"""Recordings tables from your own data: a folder per class, or a CSV (labels, events, splits).

Both give the recordings table of :data:`dataloader.sources.registry.RECORDING_COLUMNS` (``extra_labels`` holds
the further positive labels of multi-label rows), plus ``events`` (``(start_s, end_s, label)`` tuples, for
``task = events``) and, when the CSV has one, ``split``. They have no class list of their own (the classes are the
labels found) and no soundscapes to submit.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from dataloader.audio import AUDIO_EXTENSIONS
from dataloader.sources.registry import DataSourceError, SourceData, register_source
from utils.config_schema import DataConfig, PathsConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
RAVEN_LABEL_COLUMNS = ("Annotation", "Label", "Species", "Class", "label", "class")


def load_folder(root: str | Path) -> pd.DataFrame:
    """``root/<class>/**/*.wav|ogg|flac|mp3``: one recording per file, labelled by its class folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataSourceError(f"[paths] data_dir = {root}: no such folder (source = folder expects "
                              f"data_dir/<class>/*.wav|ogg|flac|mp3)")
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
                rows.append((str(path.relative_to(root)), class_dir.name, str(path)))
    if not rows:
        raise DataSourceError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in class sub-folders")
    table = pd.DataFrame(rows, columns=["filename", "primary_label", "path"])
    table["secondary_labels"] = [[] for _ in range(len(table))]
    table["extra_labels"] = [[] for _ in range(len(table))]
    table["events"] = [[] for _ in range(len(table))]
    table["group"] = [str(Path(f).with_suffix("")) for f in table["filename"]]
    log.info("folder source %s: %d recordings of %d classes", root, len(table), table["primary_label"].nunique())
    return table


def _split_labels(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    return [part.strip() for part in str(value).split(";") if part.strip()]


def inside(path: Path, roots: Optional[Sequence[Path]], what: str) -> Path:
    """``path`` resolved; with ``roots``, refused (naming ``what``: the table and row) unless it lies inside one
    of them (``[data] allow_outside_paths = true`` lifts this)."""
    resolved = path.resolve()
    if roots is not None and not any(resolved.is_relative_to(root.resolve()) for root in roots):
        raise DataSourceError(f"{what}: {path} lies outside {' and '.join(str(r) for r in roots)}; label tables may "
                              f"only name files inside them (set [data] allow_outside_paths = true to allow it)")
    return resolved


def load_csv(csv_path: str | Path, background_label: str = "background",
             roots: Optional[Sequence[Path]] = None) -> pd.DataFrame:
    """A table with ``path`` and ``label`` (several labels separated by ``;``), optionally ``start``/``end``
    (seconds: each row is an event; a file may have many rows, and a row of ``background_label`` marks an
    event-free clip), ``split`` (train/val/test), ``fold`` (0, 1, ...: your own cross-validation folds, which
    ``[data] fold`` selects) and ``group`` (the source recording; default the file). Rows
    with a ``raven`` column instead name a Raven selection table holding that file's events. Paths are relative
    to the CSV's folder; with ``roots`` every path (audio and Raven tables) must lie inside one of them."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataSourceError(f"[data] labels_csv = {csv_path}: no such file (expected columns path,label"
                              f"[,start,end][,split][,group])")
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if "path" not in raw.columns or not ({"label", "raven"} & set(raw.columns)):
        raise DataSourceError(f"{csv_path}: needs a path column and a label (or raven) column; found "
                              f"{', '.join(raw.columns)}")
    has_events = {"start", "end"} <= set(raw.columns) or "raven" in raw.columns
    if "split" in raw.columns:
        bad = sorted(set(raw["split"]) - set(SPLITS) - {""})
        if bad:
            raise DataSourceError(f"{csv_path}: split values {bad}; allowed: {', '.join(SPLITS)}")
    if "fold" in raw.columns:
        whole = raw["fold"].str.fullmatch(r"\d+")
        if not whole.all():
            raise DataSourceError(f"{csv_path}: fold values must be whole numbers (0, 1, ...); found "
                                  f"{sorted(set(raw['fold'][~whole]))[:5]}")
    records: dict[str, dict] = {}
    for i, row in raw.iterrows():
        where = f"{csv_path} line {i + 2}"  # the header is line 1
        path = str(inside(csv_path.parent / row["path"], roots, where))
        rec = records.setdefault(path, {"filename": row["path"], "labels": [], "events": [],
                                        "split": row.get("split", ""), "group": row.get("group", ""),
                                        "fold": row.get("fold", "")})
        if "raven" in raw.columns and row.get("raven", ""):
            rec["events"].extend(read_raven(inside(csv_path.parent / row["raven"], roots, where)))
            continue
        labels = _split_labels(row.get("label", ""))
        if not labels:
            raise DataSourceError(f"{where}: empty label")
        if has_events and row.get("start", "") != "":
            try:
                start, end = float(row["start"]), float(row["end"])
            except ValueError:
                raise DataSourceError(f"{where}: start/end {row['start']!r}, {row['end']!r} are not numbers") from None
            if end <= start:
                raise DataSourceError(f"{where}: end {end} <= start {start}")
            rec["events"].extend((start, end, label) for label in labels)
        rec["labels"].extend(label for label in labels if label not in rec["labels"])
    rows = []
    for path, rec in records.items():
        labels = [lbl for lbl in rec["labels"] if lbl != background_label] or \
                 sorted({e[2] for e in rec["events"] if e[2] != background_label})
        primary = labels[0] if labels else background_label
        events = [e for e in rec["events"] if e[2] != background_label]
        group = rec["group"] or str(Path(rec["filename"]).with_suffix(""))
        rows.append({"filename": rec["filename"], "primary_label": primary, "secondary_labels": [],
                     "extra_labels": labels[1:], "events": events, "path": path, "group": group,
                     "split": rec["split"], "fold": int(rec["fold"]) if rec["fold"] != "" else -1})
    table = pd.DataFrame(rows)
    if not (table["fold"] >= 0).any():
        table = table.drop(columns="fold")
    if not (table["split"] != "").any():
        table = table.drop(columns="split")
    log.info("csv source %s: %d recordings, %d labels%s", csv_path, len(table),
             len(set(table["primary_label"]) | {x for e in table["extra_labels"] for x in e}),
             f", {sum(map(len, table['events']))} events" if has_events else "")
    return table


def read_raven(path: str | Path) -> list[tuple[float, float, str]]:
    """Events of a Raven selection table (tab-separated: Begin Time (s), End Time (s), and the label in one of
    Annotation / Label / Species / Class)."""
    path = Path(path)
    if not path.is_file():
        raise DataSourceError(f"Raven selection table {path}: no such file")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    label_column = next((c for c in RAVEN_LABEL_COLUMNS if c in table.columns), None)
    if "Begin Time (s)" not in table.columns or "End Time (s)" not in table.columns or label_column is None:
        raise DataSourceError(f"{path}: a Raven selection table needs 'Begin Time (s)', 'End Time (s)' and a label "
                              f"column ({' / '.join(RAVEN_LABEL_COLUMNS)}); its header has {len(table.columns)} "
                              f"other columns")  # never the file's contents: the path may name any file
    if "View" in table.columns:  # Raven lists each selection once per view (waveform, spectrogram)
        table = table[~table["View"].str.startswith("Waveform")]
    return [(float(b), float(e), str(lbl)) for b, e, lbl in
            zip(table["Begin Time (s)"], table["End Time (s)"], table[label_column])]


@register_source("folder")
def folder_source(data: DataConfig, paths: PathsConfig) -> SourceData:
    """``data_dir/<class>/**/*.wav|ogg|flac|mp3``: one recording per file, labelled by its class folder."""
    root = Path(paths.data_dir)
    return SourceData(name="folder", data_dir=root, recordings=load_folder(root), audio_root=root)


@register_source("csv")
def csv_source(data: DataConfig, paths: PathsConfig) -> SourceData:
    """A table of ``path,label[,start,end][,split][,group]`` (``[data] labels_csv``, default data_dir/labels.csv)."""
    root = Path(paths.data_dir)
    csv_path = Path(data.labels_csv or root / "labels.csv")
    roots = None if data.allow_outside_paths else list(dict.fromkeys(p.resolve() for p in (csv_path.parent, root)))
    table = load_csv(csv_path, data.background_label, roots)
    return SourceData(name="csv", data_dir=root, recordings=table, audio_root=root)
