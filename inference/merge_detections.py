"""Join the output folders of ``detect.py --shard i/N`` runs (a job array) into the folder one run would have written.

    python -m inference.merge_detections --out detections/ shards/0 shards/1 shards/2 shards/3

Every shard must come from the same models and settings (their ``run.json`` alike but for ``shard``) and be
finished; each table (``scores.csv``, ``detections.csv``, ``raven_selections.csv``, ``file_summary.csv``,
``unreadable.csv``) is joined with its rows ordered by recording as ``detect.py`` lists them (each recording's
own rows in their order), ``raven/`` selection tables copied. A recording found in two shards is an error.
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import pandas as pd

from inference.detection_tables import HEADERS, SETTINGS, TABLES

log = logging.getLogger(__name__)


def file_order(names: pd.Series) -> pd.Series:
    """A sort key putting recordings in ``audio_tree``'s order (by path components, not by string)."""
    ranks = {name: rank for rank, name in enumerate(sorted(set(names), key=lambda n: PurePosixPath(n).parts))}
    return names.map(ranks)


def merge(shards: Sequence[Path], out: Path) -> dict:
    """Join the shard folders into ``out``; returns the counts."""
    settings = []
    for shard in shards:
        path = Path(shard) / SETTINGS
        if not path.is_file():
            raise ValueError(f"{shard}: no {SETTINGS} (not a detect.py output folder)")
        settings.append({k: v for k, v in json.loads(path.read_text()).items() if k != "shard"})
    if any(s != settings[0] for s in settings[1:]):
        raise ValueError("the shards were run with different models or settings; only shards of one run merge")
    out.mkdir(parents=True, exist_ok=True)
    (out / "raven").mkdir(exist_ok=True)
    counts = {}
    seen: dict[str, Path] = {}
    for shard in shards:
        summary = pd.read_csv(Path(shard) / "file_summary.csv", usecols=[0], dtype=str).iloc[:, 0]
        unreadable = Path(shard) / "unreadable.csv"
        names = list(summary) + (list(pd.read_csv(unreadable, dtype=str).iloc[:, 0]) if unreadable.is_file() else [])
        for name in names:
            if name in seen:
                raise ValueError(f"{name} is in two shards ({seen[name]} and {shard}): the shards overlap")
            seen[name] = Path(shard)
    for name in TABLES:
        parts = [pd.read_csv(Path(s) / f"{name}.csv", dtype=str, keep_default_na=False) for s in shards
                 if (Path(s) / f"{name}.csv").is_file()]
        if not parts:
            continue
        table = pd.concat(parts, ignore_index=True)
        table = table.iloc[file_order(table.iloc[:, 0]).sort_values(kind="mergesort").index] if len(table) else table
        table.to_csv(out / f"{name}.csv", index=False, columns=HEADERS[name])
        counts[name] = len(table)
    for shard in shards:
        for selection in (Path(shard) / "raven").glob("*.txt"):
            shutil.copyfile(selection, out / "raven" / selection.name)
    (out / SETTINGS).write_text(json.dumps({**settings[0], "shard": ""}, indent=1, sort_keys=True))
    return {"shards": len(shards), "recordings": len(seen), **{f"{k}_rows": v for k, v in counts.items()},
            "out_dir": str(out)}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shards", nargs="+", help="the shards' --out-dir folders")
    p.add_argument("--out", required=True, help="the merged folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        print(json.dumps(merge([Path(s) for s in args.shards], Path(args.out))))
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
