"""BirdCLEF competitions and editions: the facts later steps need, and how an edition is told from its files.

``[data] competition`` names a competition (its slug); each has an edition, whose file layout decides how the
data folder is read. Recognition goes by files alone: ``train_metadata.csv`` + ``eBird_Taxonomy_v2021.csv`` is
2024; ``train.csv`` + ``taxonomy.csv`` is 2025, and 2026 when ``train_soundscapes_labels.csv`` is there too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dataloader.sources.registry import DataSourceError


@dataclass(frozen=True)
class Edition:
    """The file layout of one BirdCLEF edition."""

    name: str  # "2024", "2025", "2026"
    required: tuple[str, ...]  # files that identify it (all present)
    metadata: str  # the recordings table
    taxonomy: str
    soundscape_dir: str  # unlabeled (2024) or train (2025/2026) soundscapes
    soundscape_labels: Optional[str] = None  # labelled soundscape windows (2026)


ROW_S = 5.0  # every BirdCLEF edition scores 5-s rows


@dataclass(frozen=True)
class Competition:
    """Facts of one Kaggle competition that the pipeline plans with."""

    slug: str
    edition: str
    n_classes: int
    test_files: int  # about how many hidden test soundscapes
    test_file_s: float  # their length
    time_limit_min: float  # CPU notebook limit
    site: str
    row_s: float = ROW_S  # the length of one scored row

    @property
    def test_windows(self) -> int:
        """About how many 5-s rows the hidden test set has."""
        return int(self.test_files * self.test_file_s / 5)


EDITIONS: dict[str, Edition] = {e.name: e for e in (
    Edition("2024", ("train_metadata.csv", "eBird_Taxonomy_v2021.csv"), "train_metadata.csv",
            "eBird_Taxonomy_v2021.csv", "unlabeled_soundscapes"),
    Edition("2025", ("train.csv", "taxonomy.csv"), "train.csv", "taxonomy.csv", "train_soundscapes"),
    Edition("2026", ("train.csv", "taxonomy.csv", "train_soundscapes_labels.csv"), "train.csv", "taxonomy.csv",
            "train_soundscapes", "train_soundscapes_labels.csv"),
)}

COMPETITIONS: dict[str, Competition] = {c.slug: c for c in (
    Competition("birdclef-2024", "2024", 182, 1100, 240.0, 120.0, "Western Ghats, India"),
    Competition("birdclef-2025", "2025", 206, 700, 60.0, 90.0, "El Silencio, Middle Magdalena Valley, Colombia"),
    Competition("birdclef-2026", "2026", 234, 600, 60.0, 90.0, "Pantanal, Brazil"),
)}

# Files whose presence says "this folder is meant to be Kaggle BirdCLEF data" (then auto never falls back).
KAGGLE_HINTS = ("train_metadata.csv", "train.csv", "taxonomy.csv", "eBird_Taxonomy_v2021.csv",
                "sample_submission.csv", "train_soundscapes_labels.csv", "train_audio")


def looks_like_kaggle(data_dir: Path) -> bool:
    """True when ``data_dir`` holds any file of a BirdCLEF layout."""
    return any((Path(data_dir) / name).exists() for name in KAGGLE_HINTS)


def _present(data_dir: Path, edition: Edition) -> bool:
    return all((data_dir / name).is_file() for name in edition.required)


def _requirements_text() -> str:
    return "; ".join(f"{e.name}: {' + '.join(e.required)}" for e in EDITIONS.values())


def recognise_edition(data_dir: str | Path, wanted: str = "auto") -> Edition:
    """The edition of ``data_dir``: ``wanted`` when its files are there, else (``auto``) the one whose files are
    all present (the most specific when several are, 2026 over 2025). Raises :class:`DataSourceError` listing the
    files found and what each edition needs when none matches or two layouts are mixed."""
    data_dir = Path(data_dir)
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in data_dir.iterdir()) if data_dir.is_dir() else []
    listing = ", ".join(found[:30]) or "nothing"
    if wanted != "auto":
        edition = EDITIONS[wanted]
        if not _present(data_dir, edition):
            raise DataSourceError(f"[data] edition = {wanted} but {data_dir} lacks "
                                  f"{', '.join(n for n in edition.required if not (data_dir / n).is_file())}. "
                                  f"Found: {listing}. Each edition needs: {_requirements_text()}")
        return edition
    matches = [e for e in EDITIONS.values() if _present(data_dir, e)]
    # a layout that contains another's files (2026 = 2025 + soundscape labels) is the more specific one
    specific = [e for e in matches if not any(set(e.required) < set(o.required) for o in matches)]
    if len(specific) == 1:
        return specific[0]
    if not specific:
        raise DataSourceError(f"{data_dir} looks like Kaggle BirdCLEF data but matches no edition. Found: {listing}. "
                              f"Each edition needs: {_requirements_text()}. Download it again "
                              f"(./download_data.sh), set [data] edition, or use [data] source = folder | csv")
    raise DataSourceError(f"{data_dir} mixes the layouts of editions {', '.join(e.name for e in specific)} "
                          f"(found: {listing}); set [data] edition to say which one to read")


SAFETY_MARGIN_MIN = 10.0  # minutes of a notebook's limit kept for installing wheels, loading models, writing


def edition_competition(edition: str) -> Competition:
    """The competition of a BirdCLEF edition (2024 -> birdclef-2024, ...)."""
    return next(c for c in COMPETITIONS.values() if c.edition == edition)


def competition_facts(competition_dir: str | Path) -> Optional[Competition]:
    """The competition whose files ``competition_dir`` (the folder holding ``sample_submission.csv``) holds, or None
    when its edition cannot be told (a scoring copy may hold only the test files)."""
    try:
        return edition_competition(recognise_edition(competition_dir).name)
    except DataSourceError:
        return None


def scored_file_seconds(competition_dir: str | Path) -> float:
    """How long a hidden test file of ``competition_dir`` is, for the rows of a file that cannot be read: the
    edition's facts (240 s in 2024, 60 s in 2025/2026), else the rows per file of its ``sample_submission.csv``,
    else the latest edition's."""
    facts = competition_facts(competition_dir)
    if facts is not None:
        return facts.test_file_s
    sample = Path(competition_dir) / "sample_submission.csv"
    if sample.is_file():
        import csv  # noqa: PLC0415

        with open(sample, newline="") as f:
            rows = [r[0] for r in csv.reader(f)][1:]
        ends = [int(r.rsplit("_", 1)[1]) for r in rows if r.rsplit("_", 1)[-1].isdigit()]
        first = rows[0].rsplit("_", 1)[0] if rows else ""
        own = [e for r, e in zip(rows, ends) if r.rsplit("_", 1)[0] == first]
        if own:
            return float(max(own))
    return max(COMPETITIONS.values(), key=lambda c: c.slug).test_file_s


def guard_minutes(competition_dir: str | Path) -> tuple[float, str]:
    """The clock guard's default for the competition folder ``competition_dir`` (the one holding
    ``sample_submission.csv``): its edition's CPU limit minus :data:`SAFETY_MARGIN_MIN`, and why. A folder whose
    edition cannot be told (the scoring copy may hold only test files) gets the shortest limit of all editions."""
    try:
        comp = edition_competition(recognise_edition(competition_dir).name)
        return comp.time_limit_min - SAFETY_MARGIN_MIN, (f"{comp.slug}: {comp.time_limit_min:g} CPU minutes minus a "
                                                         f"{SAFETY_MARGIN_MIN:g}-minute margin")
    except DataSourceError:
        shortest = min(COMPETITIONS.values(), key=lambda c: c.time_limit_min)
        return shortest.time_limit_min - SAFETY_MARGIN_MIN, (f"edition not recognised in {competition_dir}: the "
                                                             f"shortest limit ({shortest.time_limit_min:g} min) minus "
                                                             f"{SAFETY_MARGIN_MIN:g}")


def dry_run_folder(test_dir: str | Path) -> Optional[Path]:
    """Where a dry run finds soundscapes when ``test_dir`` is empty (as outside Kaggle's scoring): the sibling
    soundscape folder of any edition (``train_soundscapes/`` or ``unlabeled_soundscapes/``) that holds audio."""
    from dataloader.audio import audio_files  # noqa: PLC0415

    parent = Path(test_dir).parent
    for name in dict.fromkeys(e.soundscape_dir for e in reversed(list(EDITIONS.values()))):
        if audio_files(parent / name):
            return parent / name
    return None


def competition(slug: str) -> Competition:
    """The facts of ``slug`` (a clear error listing the known ones)."""
    if slug not in COMPETITIONS:
        raise DataSourceError(f"[data] competition = {slug}: unknown; allowed: {', '.join(COMPETITIONS)}")
    return COMPETITIONS[slug]
