"""Byte-identical recordings filed under several labels: merged into one, never lost."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


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
