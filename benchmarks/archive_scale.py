"""How an archive database scales, printed as JSON lines: embedding throughput and database size per audio hour
(generated long recordings, BirdNET V2.4, ``archive.build`` against the bare model on the same audio), and search
latency over a database of many windows (synthetic vectors: clusters in the model's 1,024 dimensions).

    python benchmarks/archive_scale.py [--parts build search] [--minutes 30] [--windows 1000000] [--queries 200]

``build``: ``--minutes`` of audio in 10-minute WAV recordings (noise with calls) embedded by ``archive.build`` on
every core, and the same windows through the bare model in one process: audio hours per hour for both (the
database's overhead is their ratio) and the database's bytes per audio hour (SQLite + USearch index).
``search``: a hoplite database of ``--windows`` windows written through ``archive.database`` (10-minute recordings
of 200 windows, vectors drawn around 2,000 centres, float16 in the index, cosine; ``--expansion-add`` lowers the
graph's breadth while adding, to build a million windows in minutes), then ``--queries`` searches for
the 50 nearest (``archive.search.nearest``: the HNSW index, exact re-scoring): latency percentiles, and the recall
of the true 10 nearest (exact search over every vector, same run) among them.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SR = 48000


def write_recordings(folder: Path, minutes: float, seed: int = 0) -> list[Path]:
    """10-minute WAV recordings (noise, chirps) adding up to ``minutes``, written in blocks."""
    import soundfile as sf  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    paths = []
    for k in range(int(np.ceil(minutes / 10))):
        path = folder / f"site_{k % 3}" / f"rec_{k:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        seconds = min(600.0, minutes * 60 - k * 600)
        with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
            for _ in range(int(seconds // 60)):
                block = 0.02 * rng.standard_normal(60 * SR)
                t = np.arange(int(0.2 * SR)) / SR
                for start in rng.integers(0, 59 * SR, size=20):
                    block[start:start + t.size] += 0.3 * np.sin(2 * np.pi * rng.uniform(2e3, 8e3) * t)
                f.write(block.astype(np.float32))
        paths.append(path)
    return paths


def build_part(minutes: float) -> dict[str, Any]:
    """Throughput of archive.build against the bare model, and the database's size per audio hour."""
    from archive.build import build_archive  # noqa: PLC0415
    from archive.window_embedders import load_window_embedder  # noqa: PLC0415
    from utils.runtime import available_cores  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_recordings(Path(tmp) / "archive", minutes)
        cores = available_cores()
        report = build_archive(Path(tmp) / "archive", Path(tmp) / "db", "birdnet", workers=cores)
        summary = report.summary(Path(tmp) / "db")
        embedder = load_window_embedder("birdnet", threads=cores)
        t0 = time.perf_counter()
        windows = sum(len(embedder.embed_file(p, embedder.window_s)[0]) for p in paths)
        bare = time.perf_counter() - t0
    hours = summary["audio_hours"]
    return {"part": "build", "cores": cores, "audio_hours": hours, "windows": summary["windows"],
            "db_audio_hours_per_hour": summary["audio_hours_per_hour"],
            "db_windows_per_s": round(summary["windows"] / summary["seconds"], 1),
            "bare_model_windows_per_s": round(windows / bare, 1),
            "db_over_bare_speed": round(summary["windows"] / summary["seconds"] / (windows / bare), 3),
            "db_mb_per_audio_hour": round(summary["db_bytes"] / 1e6 / hours, 2)}


def synthetic_vectors(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """``n`` unit vectors around random ``centres`` (as embeddings of recurring sounds cluster)."""
    noise = rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def search_part(windows: int, queries: int, expansion_add: Optional[int], dim: int = 1024, seed: int = 0
                ) -> dict[str, Any]:
    """Build a database of ``windows`` synthetic vectors, then time searches."""
    from archive.database import ArchiveSettings, open_archive, vectors  # noqa: PLC0415
    from archive.search import nearest  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32) / np.sqrt(dim)
    per_recording, chunk = 200, 200_000  # a commit saves the whole index: a few large commits
    with tempfile.TemporaryDirectory() as tmp:
        settings = ArchiveSettings(model="synthetic", identity="synthetic", sample_rate=SR, window_s=3.0, hop_s=3.0,
                                   dim=dim, audio_root=tmp, project="synthetic")
        db = open_archive(Path(tmp) / "db", settings, expansion_add=expansion_add)
        deployment = db.insert_deployment(name="site", project="synthetic")
        t0 = time.perf_counter()
        for first in range(0, windows, chunk):
            n = min(chunk, windows - first)
            rows = []
            for r in range(first // per_recording, (first + n - 1) // per_recording + 1):
                rec = db.insert_recording(filename=f"rec_{r:06d}.wav", deployment_id=deployment)
                lo, hi = max(first, r * per_recording), min(first + n, (r + 1) * per_recording)
                starts = [3.0 * (w - r * per_recording) for w in range(lo, hi)]
                rows += [{"recording_id": rec, "offsets": [s, s + 3.0]} for s in starts]
            db.insert_windows_batch(rows, synthetic_vectors(n, dim, rng, centres), handle_duplicates="allow")
            db.commit()
        build_s = time.perf_counter() - t0
        db.db.close()
        size = sum(p.stat().st_size for p in (Path(tmp) / "db").iterdir())
        db = open_archive(Path(tmp) / "db", readonly=True)
        probes = synthetic_vectors(queries, dim, rng, centres)
        nearest(db, probes[0], 50)  # the index is memory-mapped on first use
        times, recall = [], []
        t_exact = []
        for k, q in enumerate(probes):
            t = time.perf_counter()
            found = nearest(db, q, 50)
            times.append(time.perf_counter() - t)
            if k < 20:  # exact search over every vector: the truth, and its own time
                t = time.perf_counter()
                truth = [w for w, _ in nearest(db, q, 10, exact=True)]
                t_exact.append(time.perf_counter() - t)
                recall.append(len(set(truth) & {w for w, _ in found[:10]}) / 10)
        sample = vectors(db, [w for w, _ in found[:3]])
    ms = np.array(times) * 1000
    return {"part": "search", "windows": windows, "dim": dim, "expansion_add": expansion_add or 256,
            "build_s": round(build_s, 1),
            "build_windows_per_s": round(windows / build_s, 1), "db_mb": round(size / 1e6, 1),
            "queries": queries, "top": 50, "latency_ms_p50": round(float(np.percentile(ms, 50)), 2),
            "latency_ms_p95": round(float(np.percentile(ms, 95)), 2), "latency_ms_max": round(float(ms.max()), 2),
            "exact_search_ms_mean": round(float(np.mean(t_exact)) * 1000, 1),
            "recall_at_10_vs_exact": round(float(np.mean(recall)), 3), "vector_check": bool(np.isfinite(sample).all())}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["build", "search"], choices=("build", "search"))
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--windows", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--expansion-add", type=int, default=None,
                   help="the synthetic index's HNSW breadth while adding (default hoplite's 256; 64 builds ~3x faster)")
    args = p.parse_args(argv)
    if "build" in args.parts:
        print(json.dumps(build_part(args.minutes)), flush=True)
    if "search" in args.parts:
        print(json.dumps(search_part(args.windows, args.queries, args.expansion_add)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
