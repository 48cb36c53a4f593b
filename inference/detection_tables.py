"""The tables of a detection run, written while recordings are scored: the long score table, merged detections,
Raven selection tables (one per recording, and all of them in one CSV), a per-file summary, unreadable files."""
from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from inference.detections import (
    DETECTION_COLUMNS,
    RAVEN_COLUMNS,
    SCORE_COLUMNS,
    FileScores,
    merge_detections,
    raven_table,
    score_rows,
)

log = logging.getLogger(__name__)
SUMMARY_COLUMNS = ["file", "duration_s", "windows", "detections", "classes"]


def raven_name(file: str) -> str:
    """The selection table's file name for a recording (its relative path flattened, Raven's suffix)."""
    stem = re.sub(r"[\\/]+", "__", str(Path(file).with_suffix("")))
    return f"{stem}.Table.1.selections.txt"


@dataclass
class DetectionRun:
    """What a detection run wrote and counted."""

    out_dir: Path
    files: int = 0
    unreadable: int = 0
    audio_s: float = 0.0
    windows: int = 0
    detections: int = 0
    score_rows: int = 0


def file_summary(scores: FileScores, detections: pd.DataFrame) -> dict:
    """One recording's line: duration, windows, detections and, per class detected, its count and max score."""
    per_class = (detections.groupby("class")["max_score"].agg(["size", "max"]).sort_values("max", ascending=False)
                 if len(detections) else pd.DataFrame(columns=["size", "max"]))
    return {"file": scores.file, "duration_s": round(scores.duration_s, 3), "windows": scores.windows,
            "detections": len(detections),
            "classes": "; ".join(f"{c} x{int(r['size'])} (max {r['max']:.3f})" for c, r in per_class.iterrows())}


TABLES = ("scores", "detections", "raven_selections", "file_summary", "unreadable")
HEADERS = {"scores": SCORE_COLUMNS, "detections": DETECTION_COLUMNS, "raven_selections": ["File", *RAVEN_COLUMNS],
           "file_summary": SUMMARY_COLUMNS, "unreadable": ["file", "reason"]}
SETTINGS = "run.json"  # what the tables were computed with: a rerun with other settings is refused


def finished_files(out_dir: str | Path) -> set[str]:
    """The recordings an earlier run into ``out_dir`` finished (its ``file_summary.csv`` line, the last thing written
    for a recording, or its ``unreadable.csv`` line)."""
    done: set[str] = set()
    for name in ("file_summary", "unreadable"):
        path = Path(out_dir) / f"{name}.csv"
        if path.is_file():
            with open(path, newline="") as handle:
                done.update(row[0] for row in list(csv.reader(handle))[1:] if row)
    return done


def start_tables(out_dir: str | Path, settings: dict) -> set[str]:
    """Prepare ``out_dir`` for a run with ``settings``: a fresh folder gets them in ``run.json``; a folder an earlier
    run with the same settings wrote is resumed (returns its finished recordings; rows of a recording that was in
    flight are dropped from every table, so none is written twice). Other settings raise ``ValueError``."""
    out = Path(out_dir)
    path = out / SETTINGS
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1, sort_keys=True))
        for name in TABLES:
            (out / f"{name}.csv").unlink(missing_ok=True)
        return set()
    earlier = json.loads(path.read_text())
    if earlier != json.loads(json.dumps(settings)):
        changed = sorted(k for k in set(earlier) | set(settings) if earlier.get(k) != settings.get(k))
        raise ValueError(f"{out} holds a detection run with other settings ({', '.join(changed)}); use another "
                         f"--out-dir, or delete {path} to start over")
    done = finished_files(out)
    for name, column in (("scores", 0), ("detections", 0), ("raven_selections", 0)):
        table = out / f"{name}.csv"
        if table.is_file():  # streamed: the tables of a large archive are never read whole
            kept = table.with_suffix(".csv.tmp")
            with open(table, newline="") as src, open(kept, "w", newline="") as dst:
                reader, writer = csv.reader(src), csv.writer(dst)
                writer.writerow(next(reader, HEADERS[name]))
                writer.writerows(row for row in reader if row and row[column] in done)
            kept.replace(table)
    return done


def write_tables(results: Iterable[FileScores], classes: Sequence[str], thresholds: np.ndarray, min_score: float,
                 out_dir: str | Path, low_hz: float, high_hz: float, resume: bool = False) -> DetectionRun:
    """Write every table under ``out_dir`` as the recordings' scores arrive (one recording in memory at a time):
    ``scores.csv`` (file, start_s, end_s, class, score ≥ ``min_score``), ``detections.csv``, ``raven/<file>...
    selections.txt`` (tab-separated, what Raven Pro opens; ``low_hz``-``high_hz``: the model's band),
    ``raven_selections.csv`` (all recordings, a ``File`` column first), ``file_summary.csv`` and, when some
    recordings could not be read, ``unreadable.csv`` (file, reason). Each recording's rows are flushed before its
    ``file_summary.csv`` line, so a stopped run leaves every finished recording whole; ``resume`` appends to the
    tables :func:`start_tables` prepared (the counts are this run's)."""
    out = Path(out_dir)
    (out / "raven").mkdir(parents=True, exist_ok=True)
    run = DetectionRun(out)
    paths = {name: out / f"{name}.csv" for name in TABLES}
    handles = {}
    try:
        for name, path in paths.items():  # a table a stopped run created but never wrote to starts afresh
            fresh = not (resume and path.is_file() and path.stat().st_size)
            handles[name] = open(path, "w" if fresh else "a", newline="")
            if fresh:  # the header on disk at once: a run killed before the table's first row leaves a valid table
                csv.writer(handles[name]).writerow(HEADERS[name])
                handles[name].flush()
        for scores in results:
            run.files += 1
            if scores.error:
                run.unreadable += 1
                log.warning("%s: %s -- listed in unreadable.csv, the others go on", scores.file, scores.error)
                csv.writer(handles["unreadable"]).writerow([scores.file, scores.error])
                handles["unreadable"].flush()
                continue
            run.audio_s += scores.duration_s
            run.windows += scores.windows
            rows = score_rows(scores, classes, min_score)
            rows.to_csv(handles["scores"], header=False, index=False, float_format="%.6g")
            run.score_rows += len(rows)
            detections = pd.DataFrame(merge_detections(scores, classes, thresholds), columns=DETECTION_COLUMNS)
            detections.to_csv(handles["detections"], header=False, index=False, float_format="%.6g")
            run.detections += len(detections)
            raven = raven_table(detections, low_hz, high_hz)
            raven.to_csv(out / "raven" / raven_name(scores.file), sep="\t", index=False)
            raven.insert(0, "File", scores.file)
            raven.to_csv(handles["raven_selections"], header=False, index=False)
            for name in ("scores", "detections", "raven_selections"):  # the recording's rows, then its summary line
                handles[name].flush()
            pd.DataFrame([file_summary(scores, detections)], columns=SUMMARY_COLUMNS).to_csv(
                handles["file_summary"], header=False, index=False)
            handles["file_summary"].flush()
    finally:
        for handle in handles.values():
            handle.close()
    if paths["unreadable"].stat().st_size <= len(",".join(HEADERS["unreadable"])) + 2:  # the header alone
        paths["unreadable"].unlink()
    return run
