"""Mel cache: one float16 dB ``.npy`` per recording, in a folder named by a settings hash.

Layout of ``<cache_dir>/mel-<hash>/``::

    settings.json        the [data_process] settings and cache format version the hash was made of
    manifest.jsonl       one line per processed source file: identity (path, size, mtime) -> entry or error
    mels/<entry>.npy     (n_mels, frames) float16 absolute dB, written under a temporary name then renamed
    sums.bin             per entry: frames and per-mel-bin sums of dB and of dB² (float64), fixed-size records
    skipped_files.csv    every file that could not be used, with its reason

Each entry is keyed by its source file's identity, so adding, changing or removing a recording touches
only its entry, and a second run with nothing changed decodes nothing. The cache holds dB values, not
standardised ones (float16 keeps them to 0.03-0.06 dB, the same precision as standardised values): every
file is decoded exactly once, in a single pass with no barrier; the workers also return each file's per-bin
sums, so the statistics of any set of recordings -- the run's own training split, every one of them -- are
added up in milliseconds (:func:`fit_standardizer`): the validation fold never leaks into them and changing
the normalisation costs nothing. A :class:`dataloader.worker_pool.WorkerPool`
takes files longest first with a bounded number in flight; a worker that dies (a decoder crash) costs only
the file it was decoding.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from dataloader.audio import AudioError, MonoReader
from dataloader.cache_faults import CacheEnvironmentError, cache_lock, failure_record, is_environment_error
from dataloader.features import STORE_DTYPE, FrontEnd, WaveformSettings, as_frontend, make_frontend
from dataloader.standardize import Standardizer, StatsAccumulator
from dataloader.worker_pool import WorkerPool
from utils.atomic_files import atomic_path, atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from utils.config_schema import DataProcessConfig

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 4  # 4: float16 dB (standardised when read), NumPy/pocketfft front end
NOT_IN_CACHE = ("normalization",)  # [data_process] keys applied when the cache is read, not cached


def cache_key(dp: DataProcessConfig | WaveformSettings) -> str:
    """Hash of exactly what changes the cached bytes: the [data_process] settings that shape the mel (not the
    normalisation, applied when reading) and the format version."""
    payload = {"format_version": CACHE_FORMAT_VERSION, **_cached_settings(dp)}
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _cached_settings(dp: DataProcessConfig | WaveformSettings) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(dp).items() if k not in NOT_IN_CACHE}


def _identity(path: str) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _entry_name(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha1(f"{path}|{size}|{mtime_ns}".encode()).hexdigest()[:20]


def write_npy(path: Path, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` at exactly ``path`` (``np.save`` given a name would append ``.npy`` to it)."""
    with open(path, "wb") as f:
        np.save(f, array)


# ---- work done in worker processes (one front end per process) -------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(settings: dict[str, Any], mels_dir: str, limit_threads: bool = True) -> None:
    if limit_threads:  # processes x threads <= cores
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        threadpool_limits(1)
    _WORKER["frontend"] = make_frontend(settings)
    _WORKER["mels_dir"] = Path(mels_dir)


def _task_write(path: str, entry: str) -> dict[str, Any]:
    """Decode, dB mel, write ``mels/<entry>.npy`` (float16, block by block for long files, under a temporary
    name); return the manifest fields, with the recording's own mean and std (for ``per_clip``) and its per-bin
    sums (for ``sums.bin``)."""
    frontend: FrontEnd = _WORKER["frontend"]
    final = _WORKER["mels_dir"] / f"{entry}.npy"
    acc = StatsAccumulator(frontend.rows)
    try:
        with atomic_path(final) as tmp, MonoReader(path) as reader:
            n_frames, blocks = frontend.feature_blocks(reader, frontend.recording_limit_s)
            peak, out = frontend.pad_value, None
            for block in blocks:
                stored = block.astype(STORE_DTYPE)
                if out is None and stored.shape[1] == n_frames:  # one block: a plain save
                    out = stored
                else:
                    if out is None:
                        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=STORE_DTYPE,
                                                        shape=(block.shape[0], n_frames))
                        with open(tmp, "r+b") as f:  # reserve the blocks now: a full disk is an error here,
                            os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp))  # not a SIGBUS later
                    out[:, acc.count:acc.count + stored.shape[1]] = stored
                acc.add(block)  # the float32 values: the same statistics as the stored ones to within 0.001 dB
                peak = max(peak, frontend.level(block))
            if peak <= frontend.pad_value:  # every frame digital silence: all samples are zero
                raise AudioError("silence only (all samples zero)")
            if isinstance(out, np.memmap):
                out.flush()  # a full disk shows here (SIGBUS-free: the pages were written into the file)
                del out  # unmapped: the pages are in the page cache (no msync, as np.save does not fsync either)
            else:
                write_npy(tmp, out)
    except Exception as exc:  # noqa: BLE001 - a bad file is skipped with its reason; the machine's failure stops
        return failure_record(path, exc)
    n = acc.sum.size * acc.count
    clip_mean = float(acc.sum.sum()) / n
    clip_std = float(np.sqrt(max(float(acc.sumsq.sum()) / n - clip_mean ** 2, 0.0)))
    return {"source": path, "entry": final.name, "frames": acc.count, "seconds": frontend.seconds(acc.count),
            "clip_mean": clip_mean, "clip_std": clip_std, "sums": (acc.sum, acc.sumsq)}


# ---- the cache -------------------------------------------------------------------------------------------
@dataclass
class CacheResult:
    """What :func:`build_cache` produced."""

    folder: Path
    table: pd.DataFrame  # the input rows that have an entry, plus entry (absolute path), frames, seconds,
    #                      clip_mean, clip_std
    skipped: pd.DataFrame  # path, reason
    decoded: int
    reused: int
    pruned: int = 0


class SumsLog:
    """``sums.bin``: fixed-size binary records (entry, frames, per-bin sum, per-bin sum of squares), appended by
    the parent process after each file; a torn last record (killed run) is ignored when read."""

    def __init__(self, path: Path, n_mels: int):
        self.path = path
        self.dtype = np.dtype([("entry", "S32"), ("count", "<i8"), ("sum", "<f8", (n_mels,)),
                               ("sumsq", "<f8", (n_mels,))])

    def record(self, entry: str, total: np.ndarray, total_sq: np.ndarray, count: int) -> np.ndarray:
        """One record as bytes-ready structured array."""
        rec = np.zeros(1, dtype=self.dtype)
        rec["entry"], rec["count"], rec["sum"], rec["sumsq"] = entry.encode(), count, total, total_sq
        return rec

    def append(self):
        """The file opened for appending, first cut back to whole records (a kill can tear the last one)."""
        if self.path.is_file() and self.path.stat().st_size % self.dtype.itemsize:
            os.truncate(self.path, self.path.stat().st_size - self.path.stat().st_size % self.dtype.itemsize)
        return open(self.path, "ab")

    def load(self) -> dict[str, np.void]:
        """Entry name -> record (later records win)."""
        if not self.path.is_file():
            return {}
        raw = self.path.read_bytes()
        records = np.frombuffer(raw[:len(raw) - len(raw) % self.dtype.itemsize], dtype=self.dtype)
        return {rec["entry"].decode(): rec for rec in records}

    def rewrite(self, keep: set[str]) -> None:
        """Keep only the records of ``keep`` (atomic)."""
        records = [rec for name, rec in self.load().items() if name in keep]
        atomic_write_bytes(self.path, np.array(records, dtype=self.dtype).tobytes())


class MelCache:
    """The cache folder of one front end (one set of settings)."""

    def __init__(self, cache_dir: str | Path, frontend: FrontEnd | Any):
        self.frontend = frontend = as_frontend(frontend)
        self.folder = Path(cache_dir) / f"{frontend.cache_prefix}-{cache_key(frontend.settings)}"
        self.mels_dir = self.folder / "mels"
        self.manifest_path = self.folder / "manifest.jsonl"
        self.sums = SumsLog(self.folder / "sums.bin", frontend.rows)

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

    def prune(self, listed: set[str], under: Path) -> int:
        """Drop the records (and mel files) of files under ``under`` that are no longer in ``listed`` (removed
        from the metadata) or changed since they were cached; return how many. Records of files elsewhere
        (another dataset sharing these settings) are never touched.

        The manifest is rewritten under a temporary name and renamed, so a kill at any moment leaves
        either the old or the new manifest; mel files go only after that.
        """
        records = self.load_manifest()
        root = str(under.resolve()) + os.sep

        def dead(key: tuple[str, int, int]) -> bool:
            source = key[0]
            if not str(Path(source).resolve()).startswith(root):
                return False
            return source not in listed or _identity(source) != key[1:]

        dropped = {key for key in records if dead(key)}
        if dropped:
            atomic_write_text(self.manifest_path, "".join(json.dumps(rec) + "\n" for key, rec in records.items()
                                                     if key not in dropped))
            self.sums.rewrite({rec["entry"] for key, rec in records.items() if key not in dropped and "entry" in rec})
            for key in dropped:
                if "entry" in records[key]:
                    (self.mels_dir / records[key]["entry"]).unlink(missing_ok=True)
        return len(dropped)


def fit_standardizer(table: pd.DataFrame, frontend: FrontEnd | Any, cache_folder: str | Path) -> Standardizer:
    """Standardisation statistics (the front end's ``normalization``) per row over every recording of ``table``
    (column ``entry``; e.g. the training split), added up from the per-file sums in ``<cache_folder>/sums.bin``
    (a recording without a record is read from its cached features). ``frontend``: a front end or its settings."""
    frontend = as_frontend(frontend)
    acc = StatsAccumulator(frontend.rows)
    if frontend.normalization in ("per_frequency", "global"):
        sums = SumsLog(Path(cache_folder) / "sums.bin", frontend.rows).load()
        for entry in sorted(set(table["entry"])):  # a fixed order: the same statistics for the same recordings
            rec = sums.get(Path(entry).name)
            if rec is not None:
                acc.add_sums(rec["sum"], rec["sumsq"], int(rec["count"]))
            else:
                acc.add(np.load(entry, mmap_mode="r"))
        if acc.count == 0:
            raise RuntimeError("no cached recording to fit the standardisation statistics on")
    return Standardizer.fit(frontend.normalization, acc)


def remove_cache(cache_dir: str | Path, frontend: FrontEnd | Any) -> Optional[Path]:
    """Delete the cache folder of these settings (entries, manifest, statistics, split files); returns it, or
    None when there was none. Other settings' folders stay."""
    import shutil  # noqa: PLC0415

    folder = MelCache(cache_dir, frontend).folder
    if not folder.is_dir():
        return None
    shutil.rmtree(folder)
    return folder


def build_cache(recordings: pd.DataFrame, frontend: FrontEnd | Any, cache_dir: str | Path, workers: int = 1,
                prune_under: Optional[str | Path] = None, ray: str = "") -> CacheResult:
    """Make sure every recording in ``recordings`` (column ``path``) has a cache entry; decode only what is missing.

    Unusable files are skipped with a reason (``skipped_files.csv``); nothing already cached is lost.
    With ``prune_under`` (the dataset folder, when ``recordings`` is its full listing), records of files under
    it that are no longer listed, or changed, are dropped from the manifest with their mel files. Concurrent runs
    on one cache take turns (:func:`cache_lock`): the second finds the first's entries and decodes only the rest.
    With ``ray`` (``auto`` or host:port) the files are decoded by tasks of that Ray cluster
    (:class:`dataloader.ray_cluster.RayPool`; every node writes the cache folder at the same path) instead of
    ``workers`` processes; this process still writes the manifest and statistics, so the cache is the same.
    """
    cache = MelCache(cache_dir, frontend)
    with cache_lock(cache.folder):
        return _build_cache_locked(cache, recordings, workers, prune_under, ray)


def _pool(cache: "MelCache", workers: int, ray: str) -> Any:
    """The processes that decode: a :class:`WorkerPool` here, or a Ray cluster's tasks."""
    initargs = (cache.frontend.settings_dict(), str(cache.mels_dir))
    if not ray:
        return WorkerPool(workers, _init_worker, initargs)
    from dataloader import ray_cluster  # noqa: PLC0415 - Ray only when a cluster is asked for

    ray_cluster.connect(ray)
    return ray_cluster.RayPool(_init_worker, initargs)


def _build_cache_locked(cache: "MelCache", recordings: pd.DataFrame, workers: int,
                        prune_under: Optional[str | Path], ray: str = "") -> CacheResult:
    cache.mels_dir.mkdir(parents=True, exist_ok=True)
    settings = cache.folder / "settings.json"
    if not settings.is_file():
        atomic_write_text(settings, json.dumps({"format_version": CACHE_FORMAT_VERSION,
                                           **_cached_settings(cache.frontend.settings)}, indent=1))
    remove_stale_temporaries(cache.folder)
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
        if rec and "error" in rec and not is_environment_error(rec["error"]):
            skipped[path] = rec["error"]
        elif rec and "entry" in rec and (cache.mels_dir / rec["entry"]).is_file():
            done[path] = rec
        else:
            todo.append((path, _entry_name(path, *ident)))
    todo.sort(key=lambda pe: -idents[pe[0]][0])  # longest first: no straggler at the end
    reused = len(done) + sum(1 for p in skipped if p in idents)
    with _pool(cache, workers, ray) as pool, open(cache.manifest_path, "a") as manifest_file, \
            cache.sums.append() as sums_file:
        for res in pool.run(_task_write, todo, "preprocessing"):
            path = res["source"]
            if "fatal" in res:  # the machine's failure: record nothing about the file, stop, retry next run
                free = shutil.disk_usage(cache.folder).free / 1e9
                raise CacheEnvironmentError(
                    f"{res['fatal']} writing the cache of {path} into {cache.folder} ({free:.2f} GB free there): "
                    f"free space or set [paths] cache_dir elsewhere, then run again (files already cached are kept, "
                    f"this one is retried)")
            if "sums" in res:  # before the manifest line, which is what makes the entry count as done
                total, total_sq = res.pop("sums")
                sums_file.write(cache.sums.record(res["entry"], total, total_sq, res["frames"]).tobytes())
                sums_file.flush()
            manifest_file.write(json.dumps({"source": path, "size": idents[path][0], "mtime_ns": idents[path][1],
                                            **res}) + "\n")
            manifest_file.flush()
            if "error" in res:
                skipped[path] = res["error"]
            else:
                done[path] = res
    pruned = cache.prune(set(recordings["path"]), Path(prune_under)) if prune_under is not None else 0
    table = recordings[recordings["path"].isin(done.keys())].copy()
    table["entry"] = [str(cache.mels_dir / done[p]["entry"]) for p in table["path"]]
    for column in ("frames", "seconds", "clip_mean", "clip_std"):
        table[column] = [done[p][column] for p in table["path"]]
    skipped_df = pd.DataFrame(sorted(skipped.items()), columns=["path", "reason"])
    skipped_df.to_csv(cache.folder / "skipped_files.csv", index=False)
    log.info("preprocess: %d decoded, %d reused, %d skipped, %d stale records pruned; cache %s", len(todo), reused,
             len(skipped), pruned, cache.folder)
    return CacheResult(cache.folder, table.reset_index(drop=True), skipped_df, len(todo), reused, pruned)
