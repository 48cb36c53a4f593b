"""Search by example: the windows of an archive database nearest to one or several examples.

    python -m archive.search --db ARCHIVE_DB --query owl.wav [--query night.flac@12.5-15.5 ...]
                             [--combine mean | each] [--top 50] [--out hits/] [--exclude-query-files]

An example is a clip (every window of it) or a time range of a recording (``file@start-end`` in seconds), embedded
exactly as the database was (its model, window and hop, from the database's metadata). ``mean``: one query, the
mean direction of every example's windows; ``each``: one search per example, hits merged (a window keeps its best
score and the example that found it). Scores are cosine similarities (``distance`` = 1 - score), ranked on the
USearch index and re-scored exactly. Writes ``hits.csv`` (rank, query, window_id, file, start_s, end_s, score,
distance), a review sheet (``review/hits.png``: the mel of each hit) and an audio excerpt per hit (``excerpts/``),
what a person listens to before labelling; ``python -m archive.label_page --db ... --queue hits/hits.csv`` labels
them.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archive.database import ArchiveSettings, open_archive, settings_of, windows_frame  # noqa: E402

HIT_COLUMNS = ["rank", "query", "window_id", "file", "start_s", "end_s", "score", "distance"]
RANGE = re.compile(r"^(?P<path>.+)@(?P<start>\d+(?:\.\d*)?)-(?P<end>\d+(?:\.\d*)?)$")


@dataclass(frozen=True)
class Example:
    """A query example: a recording, or ``start_s .. end_s`` of it."""

    path: str
    start_s: float = 0.0
    end_s: Optional[float] = None

    @property
    def name(self) -> str:
        """How hits name the example that found them."""
        span = "" if self.end_s is None else f"@{self.start_s:g}-{self.end_s:g}"
        return f"{Path(self.path).name}{span}"


def parse_example(text: str) -> Example:
    """``clip.wav`` or ``recording.flac@12.5-15.5``; a range must not be empty."""
    match = RANGE.match(text)
    if match is None or Path(text).exists():
        return Example(text)
    start, end = float(match["start"]), float(match["end"])
    if end <= start:
        raise ValueError(f"{text}: the range's end must come after its start")
    return Example(match["path"], start, end)


def example_vectors(embedder: Any, settings: ArchiveSettings, example: Example) -> np.ndarray:
    """(windows, dim) vectors of an example, windowed as the database is (a span shorter than a window: one
    window, padded)."""
    path = Path(example.path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such query file")
    _, vecs = embedder.embed_file(path, settings.hop_s, example.start_s, example.end_s)
    if not len(vecs):
        raise ValueError(f"{example.name}: no audio in the query")
    return vecs


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows kept)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def nearest(db: Any, query: np.ndarray, count: int, exact: bool = False) -> list[tuple[int, float]]:
    """(window id, cosine similarity) of the ``count`` nearest windows, best first: the USearch index, then the
    exact cosine of each candidate (hoplite's re-ranking)."""
    count = min(count, db.count_embeddings())
    if count <= 0:
        return []
    results = db.search(unit(query.astype(np.float32)), count, approximate=not exact, score_fn_name="cos")
    return sorted(((int(r.window_id), float(r.sort_score)) for r in results), key=lambda t: -t[1])


def search_examples(db: Any, vectors: Sequence[np.ndarray], names: Sequence[str], combine: str = "mean",
                    top: int = 50, exclude_recordings: Sequence[int] = (), exact: bool = False) -> pd.DataFrame:
    """The ``top`` windows nearest the examples (one (windows, dim) array each), as ``HIT_COLUMNS``; windows of
    ``exclude_recordings`` are left out (the query's own recordings)."""
    if combine not in ("mean", "each"):
        raise ValueError(f"combine {combine!r}: allowed: mean, each")
    excluded = set(int(r) for r in exclude_recordings)
    fetch = top
    while True:
        if combine == "mean":
            found = {w: (s, "+".join(names)) for w, s in nearest(db, unit(np.concatenate(vectors)).mean(0), fetch,
                                                                 exact)}
        else:
            found = {}
            for vecs, name in zip(vectors, names):
                for w, s in nearest(db, unit(vecs).mean(0), fetch, exact):
                    if w not in found or s > found[w][0]:
                        found[w] = (s, name)
        frame = windows_frame(db, list(found))
        frame = frame[~frame["recording_id"].isin(excluded)]
        if len(frame) >= top or fetch >= db.count_embeddings():
            break
        fetch = min(db.count_embeddings(), fetch * 4)
    frame = frame.assign(score=[found[w][0] for w in frame["window_id"]],
                         query=[found[w][1] for w in frame["window_id"]])
    frame = frame.sort_values(["score", "window_id"], ascending=[False, True]).head(top).reset_index(drop=True)
    frame["distance"] = 1.0 - frame["score"]
    frame["rank"] = np.arange(1, len(frame) + 1)
    return frame[HIT_COLUMNS]


def write_excerpts(hits: pd.DataFrame, audio_root: Path, out_dir: Path) -> list[Path]:
    """One WAV per hit (the window with half a second around it), named by rank, file and start."""
    from archive.excerpts import read_excerpt, wav_bytes  # noqa: PLC0415
    from dataloader.audio import AudioError  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for _, hit in hits.iterrows():
        try:
            samples, sr = read_excerpt(audio_root / hit["file"], hit["start_s"], hit["end_s"])
        except (AudioError, OSError):
            continue
        path = out_dir / f"{int(hit['rank']):04d}_{Path(hit['file']).stem}_{hit['start_s']:.1f}s.wav"
        path.write_bytes(wav_bytes(samples, sr))
        written.append(path)
    return written


def write_hits(hits: pd.DataFrame, settings: ArchiveSettings, out_dir: str | Path, sheet_top: int = 24) -> Path:
    """``hits.csv``, the review sheet of the best ``sheet_top`` hits and the excerpts under ``out_dir``."""
    from dataloader.features import make_frontend  # noqa: PLC0415
    from inference.review_sheet import review_sheets  # noqa: PLC0415
    from utils.config_schema import DataProcessConfig  # noqa: PLC0415

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hits.to_csv(out / "hits.csv", index=False, float_format="%.6g")
    root = Path(settings.audio_root)
    if len(hits):
        sheet = hits.assign(**{"class": "hits", "max_score": hits["score"]})
        review_sheets(sheet, root, make_frontend(DataProcessConfig()), out / "review", top=sheet_top)
        write_excerpts(hits, root, out / "excerpts")
    return out / "hits.csv"


def main(argv: Optional[list[str]] = None) -> int:
    from archive.database import recording_ids  # noqa: PLC0415
    from archive.window_embedders import load_window_embedder  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--query", action="append", required=True, metavar="FILE[@START-END]",
                   help="an example clip, or a time range of a recording (repeatable)")
    p.add_argument("--combine", choices=("mean", "each"), default="mean")
    p.add_argument("--top", type=int, default=50)
    p.add_argument("--out", default="hits")
    p.add_argument("--exact", action="store_true", help="exact search over every vector (no index)")
    p.add_argument("--exclude-query-files", action="store_true",
                   help="leave out windows of the query recordings themselves (when they are in the archive)")
    args = p.parse_args(argv)
    db = open_archive(args.db, readonly=True)
    settings = settings_of(db)
    embedder = load_window_embedder(settings.model)
    examples = [parse_example(q) for q in args.query]
    vectors = [example_vectors(embedder, settings, e) for e in examples]
    excluded: list[int] = []
    if args.exclude_query_files:
        known = recording_ids(db)
        root = Path(settings.audio_root)
        for e in examples:
            resolved = Path(e.path).resolve()
            if resolved.is_relative_to(root) and resolved.relative_to(root).as_posix() in known:
                excluded.append(known[resolved.relative_to(root).as_posix()])
    hits = search_examples(db, vectors, [e.name for e in examples], args.combine, args.top, excluded, args.exact)
    path = write_hits(hits, settings, args.out)
    print(json.dumps({"hits": len(hits), "table": str(path), "best": hits.head(3).to_dict("records")}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
