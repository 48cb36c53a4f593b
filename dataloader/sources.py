"""Recordings tables from a Kaggle-layout data folder (BirdCLEF 2024, or the demo in the same layout)."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("primary_label", "secondary_labels", "filename")


class DataSourceError(RuntimeError):
    """The data folder cannot be used (missing files or columns); the message says what to do."""


def _parse_list(value: object, column: str, row: int) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return []
    try:
        parsed = ast.literal_eval(str(value))
    except (ValueError, SyntaxError):
        raise DataSourceError(f"train_metadata.csv row {row}: column {column} = {value!r} is not a list "
                              f"string like \"['call']\"") from None
    if not isinstance(parsed, (list, tuple)):
        raise DataSourceError(f"train_metadata.csv row {row}: column {column} = {value!r} is not a list")
    return [str(v) for v in parsed]


def load_recordings(data_dir: str | Path) -> pd.DataFrame:
    """Read ``train_metadata.csv`` into a recordings table.

    Columns: ``path`` (absolute), ``filename``, ``primary_label``, ``secondary_labels`` (list of str),
    ``group`` (the recording id; a recording never sits in two splits).
    """
    data_dir = Path(data_dir)
    meta_path = data_dir / "train_metadata.csv"
    if not meta_path.is_file():
        raise DataSourceError(f"{meta_path} not found: run ./download_data.sh (Kaggle data) or set "
                              f"[data] source = demo")
    meta = pd.read_csv(meta_path, dtype={"primary_label": str, "filename": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        raise DataSourceError(f"{meta_path}: missing required column(s) {', '.join(missing)}; "
                              f"present: {', '.join(meta.columns)}")
    table = pd.DataFrame({
        "filename": meta["filename"].astype(str),
        "primary_label": meta["primary_label"].astype(str),
        "secondary_labels": [_parse_list(v, "secondary_labels", i) for i, v in enumerate(meta["secondary_labels"])],
    })
    table["path"] = [str(data_dir / "train_audio" / f) for f in table["filename"]]
    table["group"] = [Path(f).stem for f in table["filename"]]
    return table


def submission_labels(data_dir: str | Path) -> list[str]:
    """Species columns of ``sample_submission.csv``, in its order (the submission's column order)."""
    path = Path(data_dir) / "sample_submission.csv"
    if not path.is_file():
        raise DataSourceError(f"{path} not found; the submission's columns come from it")
    columns = list(pd.read_csv(path, nrows=0).columns)
    if not columns or columns[0] != "row_id":
        raise DataSourceError(f"{path}: first column must be row_id, found {columns[:1]}")
    return columns[1:]


def is_kaggle_layout(data_dir: str | Path) -> bool:
    """True when ``data_dir`` holds a BirdCLEF-style ``train_metadata.csv``."""
    return (Path(data_dir) / "train_metadata.csv").is_file()


def load_source(source: str, data_dir: str | Path, labels_csv: str = "", background_label: str = "background"
                ) -> pd.DataFrame:
    """The recordings table of ``[data] source``: Kaggle layout (birdclef / demo / auto), a folder per class, or
    a CSV (``labels_csv``, default ``data_dir/labels.csv``)."""
    from dataloader.local_sources import load_csv, load_folder  # noqa: PLC0415

    if source == "folder":
        return load_folder(data_dir)
    if source == "csv":
        return load_csv(labels_csv or Path(data_dir) / "labels.csv", background_label)
    return load_recordings(data_dir)


def resolve_data_dir(source: str, data_dir: str | Path, demo_dir: str | Path, demo_seed: int,
                     demo_scale: float = 1.0, workers: int = 2) -> tuple[Path, bool]:
    """The folder to train on and whether it is the demo.

    ``auto`` takes the Kaggle data when ``data_dir/train_metadata.csv`` exists, otherwise generates (or
    reuses) the demo and says so; ``birdclef`` insists on Kaggle data; ``demo`` always uses the demo.
    """
    if source in ("folder", "csv"):
        return Path(data_dir), False
    if source in ("auto", "birdclef") and is_kaggle_layout(data_dir):
        return Path(data_dir), False
    if source == "birdclef":
        raise DataSourceError(f"[data] source = birdclef but {Path(data_dir) / 'train_metadata.csv'} does not exist: "
                              f"run ./download_data.sh first (Kaggle credentials needed), or set [data] source = auto")
    from dataloader.demo import generate_demo  # noqa: PLC0415

    if source == "auto":
        log.warning("=" * 78)
        log.warning("No Kaggle data in %s: using the EMBEDDED DEMO DATASET (synthetic species) in %s.", data_dir,
                    demo_dir)
        log.warning("Run ./download_data.sh for BirdCLEF 2024, or set [data] source = demo to silence this.")
        log.warning("=" * 78)
    return generate_demo(demo_dir, seed=demo_seed, scale=demo_scale, workers=workers), True


def _content_hash(path: str, chunk: int = 1 << 20) -> str:
    import hashlib  # noqa: PLC0415

    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def merge_duplicates(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge rows whose audio files are byte-identical (BirdCLEF 2024 files 19 recordings under two labels).

    Only files sharing a size are hashed, so the cost is a few reads. The first row (by filename) stays, with
    the other rows' primary labels added to ``extra_labels`` (trained as positives) and their secondary
    labels unioned; the dropped rows are returned as ``(path, reason)`` with reason ``duplicate, merged``.
    """
    table = table.sort_values("filename", kind="stable").reset_index(drop=True)
    if "extra_labels" not in table:  # a csv source's multi-label rows already have them
        table["extra_labels"] = [[] for _ in range(len(table))]
    sizes = pd.Series([Path(p).stat().st_size if Path(p).is_file() else -1 for p in table["path"]])
    candidates = sizes[(sizes >= 0) & sizes.duplicated(keep=False)].index
    hashes = pd.Series({i: _content_hash(table.at[i, "path"]) for i in candidates}, dtype=object)
    dropped, reasons = [], []
    for _, rows in hashes.groupby(hashes):
        keep, *others = sorted(rows.index)
        for i in others:
            extra = set(table.at[keep, "extra_labels"]) | {table.at[i, "primary_label"], *table.at[i, "extra_labels"]}
            if "events" in table:
                table.at[keep, "events"] = sorted(set(table.at[keep, "events"]) | set(table.at[i, "events"]))
            table.at[keep, "extra_labels"] = sorted(extra - {table.at[keep, "primary_label"]})
            table.at[keep, "secondary_labels"] = sorted(set(table.at[keep, "secondary_labels"])
                                                        | set(table.at[i, "secondary_labels"]))
            dropped.append(i)
            reasons.append(f"duplicate, merged into {table.at[keep, 'filename']}")
    if dropped:
        log.info("merged %d duplicate recordings (same audio under another label)", len(dropped))
    report = pd.DataFrame({"path": table.loc[dropped, "path"].tolist(), "reason": reasons})
    return table.drop(index=dropped).reset_index(drop=True), report
