"""Join the embedding databases of a job array's shards (``python -m archive.build --shard i/N``) into one.

    python -m archive.merge --db ARCHIVE_DB SHARD_DB [SHARD_DB ...]

Every shard must hold vectors of the same model, window and hop of the same audio root (their settings are
compared), and no recording may be in two of them (an overlap means the shards were not of one split: refused
before anything is written). Recordings go in by file name, with their windows, vectors and labels (annotations);
``ARCHIVE_DB`` is created with the shards' settings, or must be an existing database of the same settings without
any of their recordings. The shards are read only. Prints one JSON line: shards, recordings, windows, labels.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archive.build import deployment_of  # noqa: E402
from archive.database import (ArchiveError, open_archive, recording_ids, settings_of, vectors,  # noqa: E402
                              windows_frame)

log = logging.getLogger(__name__)


def check_shards(shards: Sequence[Any], into: Optional[Any]) -> dict[str, int]:
    """File name -> index of the shard holding it; ``ArchiveError`` for shards of other settings (or another
    audio root) or a recording in two of them (or already in ``into``)."""
    first = settings_of(shards[0])
    owner: dict[str, int] = {}
    known = set(recording_ids(into)) if into is not None else set()
    for k, db in enumerate(shards):
        settings = settings_of(db)
        differences = first.differences(settings)
        if settings.audio_root != first.audio_root:
            differences.append(f"audio_root {first.audio_root!r} != {settings.audio_root!r}")
        if differences:
            raise ArchiveError(f"{db.db_path}: not of the first shard's settings ({'; '.join(differences)})")
        for name in recording_ids(db):
            if name in owner or name in known:
                where = "the output database" if name in known else shards[owner[name]].db_path
                raise ArchiveError(f"{name} is in {db.db_path} and in {where}: shards of one split never share a "
                                   f"recording")
            owner[name] = k
    return owner


def merge_archives(out: str | Path, shard_paths: Sequence[str | Path]) -> dict[str, int]:
    """Copy every recording of ``shard_paths`` (windows, vectors, labels) into the database ``out``, by file
    name; see the module docstring. Returns the counts."""
    if not shard_paths:
        raise ArchiveError("no shard database given")
    if len({Path(p).resolve() for p in shard_paths}) < len(shard_paths):
        raise ArchiveError("a shard database is given twice")
    shards = [open_archive(p, readonly=True) for p in shard_paths]
    try:
        settings = settings_of(shards[0])
        exists = (Path(out) / "hoplite.sqlite").is_file()
        db = open_archive(out, settings)
        try:
            owner = check_shards(shards, db if exists else None)
            counts = {"shards": len(shards), "recordings": 0, "windows": 0, "labels": 0}
            deployments = {d.name: d.id for d in db.get_all_deployments()}
            frames = [windows_frame(s) for s in shards]
            for name in sorted(owner):  # file-name order, whatever the shards' completion order was
                src = shards[owner[name]]
                site = deployment_of(name)
                if site not in deployments:
                    deployments[site] = db.insert_deployment(name=site, project=settings.project)
                old_id, duration = src.db.execute("SELECT id, duration_s FROM recordings WHERE filename = ?",
                                                  (name,)).fetchone()
                rec = db.insert_recording(filename=name, deployment_id=deployments[site], duration_s=duration)
                windows = frames[owner[name]]
                windows = windows[windows["recording_id"] == old_id]
                if len(windows):
                    rows = [{"recording_id": rec, "offsets": [float(a), float(b)]}
                            for a, b in zip(windows["start_s"], windows["end_s"])]
                    db.insert_windows_batch(rows, vectors(src, windows["window_id"].to_numpy(np.int64)),
                                            handle_duplicates="allow")
                for offsets, label, kind, provenance in src.db.execute(
                        "SELECT offsets, label, label_type, provenance FROM annotations WHERE recording_id = ?",
                        (old_id,)).fetchall():
                    db.insert_annotation(rec, [float(x) for x in offsets], label, kind, provenance,
                                         handle_duplicates="allow")
                    counts["labels"] += 1
                counts["recordings"] += 1
                counts["windows"] += len(windows)
        finally:
            db.commit()
            db.db.close()
    finally:
        for s in shards:
            s.db.close()
    return counts


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True, help="the merged database (created, or an existing one of the same "
                   "settings)")
    p.add_argument("shards", nargs="+", help="the shards' database folders")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        counts = merge_archives(args.db, args.shards)
    except ArchiveError as exc:
        print(f"archive.merge: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
