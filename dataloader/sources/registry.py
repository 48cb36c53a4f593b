"""The data-source registry: a name -> loader table, as timm's model registry, and what every loader returns.

A source is one decorated function ``loader(data, paths) -> SourceData`` (``data`` = the ``[data]`` section,
``paths`` = ``[paths]``). :func:`load_source` calls it and checks the declared column contracts once, so every
later step can rely on the columns of :data:`RECORDING_COLUMNS` (and :data:`WINDOW_COLUMNS` for labelled
soundscape windows). A source that can recognise its own folder registers ``recognise(data_dir) -> bool``;
``source = auto`` asks those.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from utils.config_schema import DataConfig, PathsConfig
from utils.registry import Registry

log = logging.getLogger(__name__)

# What every recordings table holds (one row per training recording).
RECORDING_COLUMNS = ("path", "filename", "primary_label", "secondary_labels", "extra_labels", "group")
# What every table of labelled soundscape windows holds (one row per labelled window).
WINDOW_COLUMNS = ("path", "filename", "start_s", "end_s", "labels", "group")
# What every table of soundscape files holds (site/date/hour empty where the name does not say).
SOUNDSCAPE_COLUMNS = ("path", "filename", "site", "date", "hour")


class DataSourceError(RuntimeError):
    """The data folder cannot be used (missing files or columns); the message says what to do."""


@dataclass
class SourceData:
    """What a data source gives the pipeline."""

    name: str  # e.g. "birdclef-2026", "demo-2025", "folder", "csv"
    data_dir: Path
    recordings: pd.DataFrame  # RECORDING_COLUMNS (+ optional: events, split, rating, collection)
    classes: Optional[list[str]] = None  # the submission columns, in order; None = the labels found in the data
    audio_root: Optional[Path] = None  # the folder the recordings live under (cache pruning of a full run)
    soundscape_dir: Optional[Path] = None  # unlabeled/train soundscapes: background mixing, pseudo-labels, dry run
    test_dir: Optional[Path] = None  # the soundscapes a submission predicts (None: no submission)
    soundscapes: Optional[pd.DataFrame] = None  # SOUNDSCAPE_COLUMNS, the files of soundscape_dir
    windows: Optional[pd.DataFrame] = None  # WINDOW_COLUMNS: labelled soundscape windows
    ground_truth: Optional[Path] = None  # per-window solution of test_dir (the demo's), to score the submission
    is_demo: bool = False
    report: dict[str, Any] = field(default_factory=dict)  # what loading dropped, mapped or could not map


@dataclass(frozen=True)
class SourceEntry:
    """A registered source: its loader and, when it can tell its folder, a recogniser."""

    name: str
    loader: Callable[[Any, Any], SourceData]
    recognise: Optional[Callable[[Path], bool]] = None
    help: str = ""


SOURCES = Registry("data source")


def register_source(name: str, recognise: Optional[Callable[[Path], bool]] = None, help: str = ""
                    ) -> Callable[[Callable[[Any, Any], SourceData]], Callable[[Any, Any], SourceData]]:
    """Decorator: register ``loader(data, paths) -> SourceData`` under ``name``."""
    def wrap(fn: Callable[[Any, Any], SourceData]) -> Callable[[Any, Any], SourceData]:
        entry = SourceEntry(name, fn, recognise, help or (fn.__doc__ or "").strip().split("\n")[0])
        SOURCES.register(name, entry=entry)(fn)
        return fn
    return wrap


def list_sources() -> list[str]:
    """Names of the registered sources, in the order they were registered."""
    return SOURCES.in_order()


def source_entry(name: str) -> SourceEntry:
    """The entry registered as ``name`` (a clear error listing the others)."""
    if name not in SOURCES:
        raise DataSourceError(f"[data] source = {name}: unknown; allowed: {', '.join(list_sources())}")
    return SOURCES.facts(name)["entry"]


def recognising_sources() -> list[SourceEntry]:
    """The entries that can recognise their own folder (asked by ``source = auto``, in registration order)."""
    return [e for e in map(source_entry, list_sources()) if e.recognise is not None]


def check_columns(table: pd.DataFrame, required: tuple[str, ...], what: str) -> None:
    """Raise :class:`DataSourceError` naming the missing columns of ``table``."""
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataSourceError(f"{what}: missing column(s) {', '.join(missing)}; present: "
                              f"{', '.join(map(str, table.columns))}")


def load_source(data: DataConfig, paths: PathsConfig) -> SourceData:
    """Run the loader of ``data.source`` and check its tables' column contracts once."""
    result = source_entry(data.source).loader(data, paths)
    check_columns(result.recordings, RECORDING_COLUMNS, f"source {result.name}: recordings table")
    if result.windows is not None:
        check_columns(result.windows, WINDOW_COLUMNS, f"source {result.name}: labelled soundscape windows")
    if result.soundscapes is not None:
        check_columns(result.soundscapes, SOUNDSCAPE_COLUMNS, f"source {result.name}: soundscape table")
    for column in ("primary_label", "filename", "group"):  # labels are names, never numbers
        result.recordings[column] = result.recordings[column].astype(str)
    return result
