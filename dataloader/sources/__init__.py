"""Data sources: a registry of loaders, each returning a :class:`SourceData` (recordings table with declared
columns, class list, soundscape folders, labelled soundscape windows).

Registered: ``birdclef`` (Kaggle BirdCLEF 2024 / 2025 / 2026, recognised from the files), ``demo`` (the embedded
synthetic demo in any edition's layout), ``auto`` (Kaggle data when there, else the demo), ``folder`` (a folder per
class) and ``csv`` (a table of paths and labels, events, splits). Adding a source is one module with one function
decorated by :func:`register_source`, imported here.
"""
from dataloader.sources import auto, birdclef, demo_source, local  # noqa: F401 - the entries register themselves
from dataloader.sources.birdclef import GROUND_TRUTH_FILE, read_birdclef, submission_labels
from dataloader.sources.duplicates import merge_duplicates
from dataloader.sources.editions import COMPETITIONS, EDITIONS, competition, recognise_edition
from dataloader.sources.registry import (
                                         RECORDING_COLUMNS,
                                         WINDOW_COLUMNS,
                                         DataSourceError,
                                         SourceData,
                                         list_sources,
                                         load_source,
                                         register_source,
)

__all__ = ["COMPETITIONS", "EDITIONS", "GROUND_TRUTH_FILE", "RECORDING_COLUMNS", "WINDOW_COLUMNS",
           "DataSourceError", "SourceData", "competition", "list_sources", "load_source", "merge_duplicates",
           "read_birdclef", "recognise_edition", "register_source", "submission_labels"]
