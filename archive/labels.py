"""Labels of archive windows, kept in the database as hoplite annotations (a window's recording and offsets, the
class, positive / negative / uncertain, and who said it), and exported as the table the ``csv`` source trains on.

Each label is committed when it is given: a closed page or a crash loses nothing said before it.

    python -m archive.labels --db ARCHIVE_DB --export labels.csv [--clips clips/] [--background-label background]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archive.database import open_archive, settings_of, windows_frame  # noqa: E402

KINDS = ("positive", "negative", "skip")  # skip: heard, undecided (hoplite's UNCERTAIN): not asked again
LABEL_COLUMNS = ["window_id", "file", "start_s", "end_s", "label", "kind", "annotator"]


def label_type(kind: str) -> Any:
    """hoplite's LabelType of a kind of label."""
    from perch_hoplite.db.datatypes import LabelType  # noqa: PLC0415

    types = {"positive": LabelType.POSITIVE, "negative": LabelType.NEGATIVE, "skip": LabelType.UNCERTAIN}
    if kind not in types:
        raise ValueError(f"label kind {kind!r}: allowed: {', '.join(KINDS)}")
    return types[kind]


def kind_of(value: int) -> str:
    """The kind of a stored label type."""
    return {0: "negative", 1: "positive", 2: "skip"}[int(value)]


def set_label(db: Any, window_id: int, label: str, kind: str, annotator: str = "page") -> None:
    """Give window ``window_id`` the label ``label`` of ``kind`` (replacing that window's earlier answer for that
    label, whoever gave it), committed at once; ``kind = "clear"`` removes the answer."""
    label = str(label).strip()
    if not label:
        raise ValueError("a label needs a class name")
    window = db.get_window(int(window_id))
    for ann in db.get_all_annotations(filter=_same_window(window, label)):
        db.remove_annotation(ann.id)
    if kind != "clear":
        db.insert_annotation(window.recording_id, list(window.offsets), label, label_type(kind), annotator,
                             handle_duplicates="allow")
    db.commit()


def _same_window(window: Any, label: str) -> Any:
    from ml_collections import config_dict  # noqa: PLC0415

    return config_dict.create(eq=dict(recording_id=window.recording_id, label=label),
                              approx=dict(offsets=list(window.offsets)))


def labels_frame(db: Any) -> pd.DataFrame:
    """Every label of a window of the database, as ``LABEL_COLUMNS`` (annotations that match no window, e.g. made
    by another tool on other offsets, are left out)."""
    rows = db.db.execute("SELECT recording_id, offsets, label, label_type, provenance FROM annotations").fetchall()
    if not rows:
        return pd.DataFrame(columns=LABEL_COLUMNS)
    ann = pd.DataFrame([(r[0], round(float(r[1][0]), 3), r[2], kind_of(r[3]), r[4]) for r in rows],
                       columns=["recording_id", "start_key", "label", "kind", "annotator"])
    windows = windows_frame(db).assign(start_key=lambda f: f["start_s"].round(3))
    merged = ann.merge(windows, on=["recording_id", "start_key"], how="inner")
    return merged[LABEL_COLUMNS].sort_values(["window_id", "label"]).reset_index(drop=True)


def export_labels(db: Any, out: str | Path, background_label: str = "background",
                  clips_dir: Optional[str | Path] = None) -> pd.DataFrame:
    """The labelled windows as the ``csv`` source's table (``path,label,start,end,group``): one row per positive
    label; a window with negatives only becomes one ``background_label`` row (heard, none of the classes asked);
    skipped windows are left out. ``group`` is the recording, so its windows share a fold. The rows point into the
    recordings (``start``/``end``: events in them); with ``clips_dir`` each labelled window is cut into its own WAV
    there and the rows point at those clips instead (no ``start``/``end``: the clip is the window), the table a
    clip classifier trains on."""
    from archive.excerpts import read_excerpt, wav_bytes  # noqa: PLC0415

    settings = settings_of(db)
    labels = labels_frame(db)
    root = Path(settings.audio_root)
    positives = labels[labels["kind"] == "positive"]
    has_positive = set(positives["window_id"])
    negatives = labels[(labels["kind"] == "negative") & ~labels["window_id"].isin(has_positive)]
    negatives = negatives.drop_duplicates("window_id").assign(label=background_label)
    table = pd.concat([positives, negatives]).sort_values(["file", "start_s", "label"])
    frame = pd.DataFrame({"path": [str(root / f) for f in table["file"]], "label": table["label"].to_numpy(),
                          "start": table["start_s"].to_numpy(), "end": table["end_s"].to_numpy(),
                          "group": table["file"].to_numpy()})
    if clips_dir is not None:
        clips = Path(clips_dir)
        clips.mkdir(parents=True, exist_ok=True)
        names = []
        for path, start, end, w in zip(frame["path"], frame["start"], frame["end"], table["window_id"]):
            name = clips / f"{Path(path).stem}_{start:08.2f}s_w{w}.wav"
            if not name.exists():
                samples, sr = read_excerpt(path, start, end, pad_s=0.0)
                name.write_bytes(wav_bytes(samples, sr))
            names.append(str(name.resolve()))
        frame = frame.assign(path=names).drop(columns=["start", "end"])
        frame = frame.groupby(["path", "group"], sort=False, as_index=False)["label"].agg(";".join)
        frame = frame[["path", "label", "group"]]
    frame.to_csv(out, index=False)
    return frame


def label_counts(db: Any) -> dict[str, dict[str, int]]:
    """Per class, how many windows are positive, negative and skipped."""
    labels = labels_frame(db)
    counts: dict[str, dict[str, int]] = {}
    for (label, kind), n in labels.groupby(["label", "kind"]).size().items():
        counts.setdefault(label, {k: 0 for k in KINDS})[kind] = int(n)
    return counts


def label_matrix(db: Any, classes: list[str], unlabelled_as: str = "negative"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window ids, targets, mask) of the labelled windows for ``classes``: targets 1 for a positive, 0 for a
    negative; a class a labelled window has no answer for counts as negative (``unlabelled_as = "negative"``: the
    annotator named what was there) or is left out of the loss (``"unknown"``). Skipped windows are not used."""
    if unlabelled_as not in ("negative", "unknown"):
        raise ValueError(f"unlabelled_as {unlabelled_as!r}: allowed: negative, unknown")
    labels = labels_frame(db)
    labels = labels[labels["kind"] != "skip"]
    ids = np.array(sorted(set(labels["window_id"])), dtype=np.int64)
    row = {w: i for i, w in enumerate(ids)}
    col = {c: j for j, c in enumerate(classes)}
    targets = np.zeros((len(ids), len(classes)), dtype=np.float32)
    mask = np.full((len(ids), len(classes)), unlabelled_as == "negative", dtype=bool)
    for w, label, kind in zip(labels["window_id"], labels["label"], labels["kind"]):
        if label in col:
            targets[row[w], col[label]] = 1.0 if kind == "positive" else 0.0
            mask[row[w], col[label]] = True
    return ids, targets, mask


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--export", required=True, help="the CSV to write (the csv source's path,label,start,end,group)")
    p.add_argument("--background-label", default="background")
    p.add_argument("--clips", default=None, metavar="DIR",
                   help="cut each labelled window into its own WAV here; the table then lists those clips")
    args = p.parse_args(argv)
    db = open_archive(args.db, readonly=True)
    table = export_labels(db, args.export, args.background_label, args.clips)
    print(json.dumps({"rows": len(table), "out": args.export, "counts": label_counts(db)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
