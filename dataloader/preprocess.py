"""Mel cache: one standardised float16 ``.npy`` per recording, in a folder named by a settings hash.

Layout of ``<cache_dir>/mel-<hash>/``::

    settings.json        the [data_process] settings and cache format version the hash was made of
    stats.json           standardisation statistics (fitted once on a seeded sample, then frozen)
    manifest.jsonl       one line per processed source file: identity (path, size, mtime) -> entry or error
    mels/<entry>.npy     (n_mels, frames) float16, written under a temporary name then renamed
    skipped_files.csv    every file that could not be used, with its reason

Each entry is keyed by its source file's identity, so adding, changing or removing a recording touches
only its entry, and a second run with nothing changed decodes nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from tqdm import tqdm

from dataloader.audio import AudioError, MonoReader, resample
from dataloader.features import DB_FLOOR_POWER, MelFrontEnd, StatsAccumulator, Standardizer

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2  # 2: sample mels kept as float32, so every entry is computed the same way
STATS_SEED = 0  # fixed: the statistics belong to the cache, not to a fold or a training seed
_KEEP_SAMPLE_BYTES = 1 << 30  # sample mels kept in memory to avoid decoding them twice
LONG_FILE_S = 300.0  # longer files (at the target rate) are decoded and transformed in blocks ...
BLOCK_S = 60.0  # ... of this many seconds, so memory does not grow with a file's length
DB_FLOOR = 10.0 * float(np.log10(DB_FLOOR_POWER))


def cache_key(dp: Any) -> str:
    """Hash of exactly what changes the cached bytes: the [data_process] settings and the format version."""
    payload = {"format_version": CACHE_FORMAT_VERSION, **dataclasses.asdict(dp)}
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _identity(path: str) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _entry_name(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha1(f"{path}|{size}|{mtime_ns}".encode()).hexdigest()[:20]


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- work done in worker processes (one front end per process) -------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(dp: dict[str, Any], standardizer: Optional[dict[str, Any]], mels_dir: Optional[str],
                 limit_threads: bool = True) -> None:
    if limit_threads:  # processes x threads <= cores
        import torch  # noqa: PLC0415

        torch.set_num_threads(1)
    _WORKER["dp"] = dp
    _WORKER["frontend"] = MelFrontEnd(dp["sample_rate"], dp["n_fft"], dp["hop_length"], dp["n_mels"], dp["f_min"],
                                      dp["f_max"])
    _WORKER["standardizer"] = Standardizer.from_dict(standardizer) if standardizer else None
    _WORKER["mels_dir"] = Path(mels_dir) if mels_dir else None


def _seconds(frames: int) -> float:
    return round(frames * _WORKER["dp"]["hop_length"] / _WORKER["dp"]["sample_rate"], 3)


def _decode_db(path: str) -> np.ndarray:
    """dB mel of one file (decoded once); files longer than LONG_FILE_S at the target rate go in blocks."""
    dp = _WORKER["dp"]
    with MonoReader(path) as reader:
        total = reader.length(dp["max_length_s"] if dp["mode"] == "single" else None)
        if reader.samplerate == dp["sample_rate"] and total > LONG_FILE_S * reader.samplerate:
            mel = _WORKER["frontend"].blockwise(reader.read, total, int(BLOCK_S * dp["sample_rate"] / dp["hop_length"]))
        else:
            mel = _WORKER["frontend"](resample(reader.read(0, total), reader.samplerate, dp["sample_rate"]))
    if mel.max() <= DB_FLOOR:  # every frame at the dB floor: all samples are zero
        raise AudioError("silence only (all samples zero)")
    return mel


def _task_db(path: str) -> dict[str, Any]:
    """Stats phase: the dB mel (float32, so that a kept mel is written exactly as a fresh one) of one file,
    or the reason it is unusable."""
    try:
        mel = _decode_db(path)
    except AudioError as exc:
        return {"source": path, "error": str(exc)}
    return {"source": path, "mel": mel, "seconds": _seconds(mel.shape[1])}


def _task_write(path: str, entry: str) -> dict[str, Any]:
    """Main phase: decode, mel, standardise, write ``mels/<entry>.npy``; return the manifest fields."""
    try:
        mel = _decode_db(path)
    except AudioError as exc:
        return {"source": path, "error": str(exc)}
    return {"source": path, **_write_entry(mel, entry)}


def _write_entry(mel_db: np.ndarray, entry: str) -> dict[str, Any]:
    mel = _WORKER["standardizer"](mel_db.astype(np.float32, copy=False)).astype(np.float16)
    _atomic_save(_WORKER["mels_dir"] / f"{entry}.npy", mel)
    return {"entry": f"{entry}.npy", "frames": int(mel.shape[1]), "seconds": _seconds(mel.shape[1])}


def _map(fn, args: list[tuple], workers: int, init: tuple, desc: str):
    """Yield ``fn(*a)`` for every ``a`` (completion order), in-process or in a spawn pool, with a tqdm bar
    showing files/s and audio-hours/s."""
    bar = tqdm(total=len(args), desc=desc, unit="file", mininterval=1.0)
    pool = None
    if workers <= 1 or len(args) <= 1:
        _init_worker(*init, limit_threads=False)
        results = (fn(*a) for a in args)
    else:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(args)), initializer=_init_worker, initargs=init,
                                   mp_context=multiprocessing.get_context("spawn"))
        results = (f.result() for f in as_completed([pool.submit(fn, *a) for a in args]))
    t0, audio_s = time.perf_counter(), 0.0
    try:
        for res in results:
            audio_s += res.get("seconds", 0.0)
            bar.set_postfix_str(f"{audio_s / 3600 / max(time.perf_counter() - t0, 1e-9):.3f} audio-h/s",
                                refresh=False)
            bar.update()
            yield res
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


# ---- the cache -------------------------------------------------------------------------------------------
@dataclass
class CacheResult:
    """What :func:`build_cache` produced."""

    folder: Path
    table: pd.DataFrame  # the input rows that have an entry, plus columns entry (absolute path), frames, seconds
    skipped: pd.DataFrame  # path, reason
    standardizer: Standardizer
    decoded: int
    reused: int


class MelCache:
    """The cache folder for one set of ``[data_process]`` settings."""

    def __init__(self, cache_dir: str | Path, dp: Any):
        self.dp = dp
        self.folder = Path(cache_dir) / f"mel-{cache_key(dp)}"
        self.mels_dir = self.folder / "mels"
        self.manifest_path = self.folder / "manifest.jsonl"
        self.stats_path = self.folder / "stats.json"

    def load_manifest(self) -> dict[tuple[str, int, int], dict[str, Any]]:
        """Identity -> manifest record (later lines win); a torn last line (killed run) is ignored."""
        records: dict[tuple[str, int, int], dict[str, Any]] = {}
        if self.manifest_path.is_file():
            for line in self.manifest_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    records[(rec["source"], rec["size"], rec["mtime_ns"])] = rec
                except (ValueError, KeyError, TypeError):
                    continue
        return records

    def load_standardizer(self) -> Optional[Standardizer]:
        """The frozen statistics, or None before the first build."""
        if self.stats_path.is_file():
            return Standardizer.from_dict(json.loads(self.stats_path.read_text()))
        return None


def _fit_standardizer(dp: Any, paths: list[str], workers: int, init: tuple, keep: set[str]
                      ) -> tuple[Standardizer, dict[str, np.ndarray]]:
    """Fit statistics on a seeded sample of ``paths``; return them and the sample mels worth keeping."""
    acc = StatsAccumulator(dp.n_mels)
    kept: dict[str, np.ndarray] = {}
    if dp.normalization in ("per_frequency", "global"):
        rng = np.random.default_rng(STATS_SEED)
        sample = sorted(paths) if len(paths) <= dp.stats_max_files else list(
            rng.choice(sorted(paths), size=dp.stats_max_files, replace=False))
        kept_bytes = 0
        for res in _map(_task_db, [(p,) for p in sample], workers, init, "fitting statistics"):
            if "mel" in res:
                acc.add(res["mel"])
                if res["source"] in keep and kept_bytes + res["mel"].nbytes <= _KEEP_SAMPLE_BYTES:
                    kept[res["source"]] = res["mel"]
                    kept_bytes += res["mel"].nbytes
        if acc.count == 0:
            raise RuntimeError("no usable recording in the statistics sample: check the audio files")
    return Standardizer.fit(dp.normalization, acc), kept


def build_cache(recordings: pd.DataFrame, dp: Any, cache_dir: str | Path, workers: int = 1,
                stats_population: Optional[list[str]] = None) -> CacheResult:
    """Make sure every recording in ``recordings`` (column ``path``) has a cache entry; decode only what is missing.

    The standardisation statistics are fitted once per cache on a seeded sample of ``stats_population``
    (default: the recordings), e.g. the whole metadata when only a testing subset is processed.
    Unusable files are skipped with a reason (``skipped_files.csv``); nothing already cached is lost.
    """
    cache = MelCache(cache_dir, dp)
    cache.mels_dir.mkdir(parents=True, exist_ok=True)
    settings = cache.folder / "settings.json"
    if not settings.is_file():
        _atomic_text(settings, json.dumps({"format_version": CACHE_FORMAT_VERSION, **dataclasses.asdict(dp)}, indent=1))
    manifest = cache.load_manifest()
    done: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    todo: list[tuple[str, str]] = []
    idents: dict[str, tuple[int, int]] = {}
    for path in dict.fromkeys(recordings["path"]):
        ident = _identity(path)
        if ident is None:
            skipped[path] = "missing file"
            continue
        idents[path] = ident
        rec = manifest.get((path, *ident))
        if rec and "error" in rec:
            skipped[path] = rec["error"]
        elif rec and (cache.mels_dir / rec["entry"]).is_file():
            done[path] = rec
        else:
            todo.append((path, _entry_name(path, *ident)))
    reused = len(done) + sum(1 for p in skipped if p in idents)
    dp_dict = dataclasses.asdict(dp)
    standardizer = cache.load_standardizer()
    kept: dict[str, np.ndarray] = {}
    if standardizer is None:
        population = [p for p in dict.fromkeys(stats_population or idents) if _identity(p) is not None]
        standardizer, kept = _fit_standardizer(dp, population, workers, (dp_dict, None, None), {p for p, _ in todo})
        _atomic_text(cache.stats_path, json.dumps(standardizer.to_dict()))
    init = (dp_dict, standardizer.to_dict(), str(cache.mels_dir))
    with open(cache.manifest_path, "a") as manifest_file:
        def record(res: dict[str, Any]) -> None:
            path = res["source"]
            manifest_file.write(json.dumps({"source": path, "size": idents[path][0], "mtime_ns": idents[path][1],
                                            **res}) + "\n")
            manifest_file.flush()
            if "error" in res:
                skipped[path] = res["error"]
            else:
                done[path] = res

        if kept:
            _init_worker(*init, limit_threads=False)
            for path, entry in todo:
                if path in kept:
                    record({"source": path, **_write_entry(kept.pop(path), entry)})
        rest = [(p, e) for p, e in todo if p not in done and p not in skipped]
        for res in _map(_task_write, rest, workers, init, "preprocessing"):
            record(res)
    table = recordings[recordings["path"].isin(done.keys())].copy()
    table["entry"] = [str(cache.mels_dir / done[p]["entry"]) for p in table["path"]]
    table["frames"] = [done[p]["frames"] for p in table["path"]]
    table["seconds"] = [done[p]["seconds"] for p in table["path"]]
    skipped_df = pd.DataFrame(sorted(skipped.items()), columns=["path", "reason"])
    skipped_df.to_csv(cache.folder / "skipped_files.csv", index=False)
    log.info("preprocess: %d decoded, %d reused, %d skipped; cache %s", len(todo), reused, len(skipped), cache.folder)
    return CacheResult(cache.folder, table.reset_index(drop=True), skipped_df, standardizer, len(todo), reused)
