"""Mel cache: one standardised float16 ``.npy`` per recording, in a folder named by a settings hash.

Layout of ``<cache_dir>/mel-<hash>/``::

    settings.json        the [data_process] settings and cache format version the hash was made of
    stats.json           standardisation statistics (fitted once on a seeded sample, then frozen)
    manifest.jsonl       one line per processed source file: identity (path, size, mtime) -> entry or error
    mels/<entry>.npy     (n_mels, frames) float16, written under a temporary name then renamed
    scratch/             dB mels of the statistics sample, kept on disk while a build runs so that they are
                         not decoded twice (removed at the end)
    skipped_files.csv    every file that could not be used, with its reason

Each entry is keyed by its source file's identity, so adding, changing or removing a recording touches
only its entry, and a second run with nothing changed decodes nothing. One pool of worker processes
(forked where the platform allows, so starting it costs milliseconds) serves both phases; tasks go
longest file first with a bounded number in flight; a worker that dies (a decoder crash) costs only the
file it was decoding, which is found by re-running the suspects one at a time.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pandas as pd
from tqdm import tqdm

from dataloader.audio import AudioError, MonoReader, ResampledReader, resample
from dataloader.features import DB_FLOOR_POWER, MelFrontEnd, StatsAccumulator, Standardizer

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 3  # 3: NumPy/pocketfft front end with a banded filter bank
STATS_SEED = 0  # fixed: the statistics belong to the cache, not to a fold or a training seed
LONG_FILE_S = 300.0  # longer files are decoded (and resampled) and transformed in blocks ...
BLOCK_S = 60.0  # ... of this many seconds, so memory does not grow with a file's length
IN_FLIGHT_PER_WORKER = 4  # queued tasks per worker: enough to never idle, few enough to bound memory
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


def _remove_stale_temporaries(folder: Path) -> int:
    """Delete ``*.tmp-<pid>`` files left by killed builds (their process is gone); return how many."""
    removed = 0
    for tmp in itertools.chain(folder.glob("*.tmp-*"), folder.glob("*/*.tmp-*")):
        pid = tmp.name.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- work done in worker processes (one front end per process) -------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(dp: dict[str, Any], mels_dir: str, limit_threads: bool = True) -> None:
    if limit_threads:  # processes x threads <= cores
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        threadpool_limits(1)
    _WORKER["dp"] = dp
    _WORKER["frontend"] = MelFrontEnd(dp["sample_rate"], dp["n_fft"], dp["hop_length"], dp["n_mels"], dp["f_min"],
                                      dp["f_max"])
    _WORKER["mels_dir"] = Path(mels_dir)
    _WORKER["scratch_dir"] = Path(mels_dir).parent / "scratch"


def _seconds(frames: int) -> float:
    return round(frames * _WORKER["dp"]["hop_length"] / _WORKER["dp"]["sample_rate"], 3)


def _decode_db(path: str) -> np.ndarray:
    """dB mel of one file, decoded once; files longer than LONG_FILE_S go in blocks (resampled on the fly)."""
    dp, fe = _WORKER["dp"], _WORKER["frontend"]
    with MonoReader(path) as reader:
        total = reader.length(dp["max_length_s"] if dp["mode"] == "single" else None)
        if total > LONG_FILE_S * reader.samplerate:
            block_frames = int(BLOCK_S * dp["sample_rate"] / dp["hop_length"])
            if reader.samplerate == dp["sample_rate"]:
                mel = fe.blockwise(reader.read, total, block_frames)
            else:
                stream = ResampledReader(reader, total, dp["sample_rate"])
                mel = fe.blockwise(stream.read, stream.length, block_frames)
        else:
            mel = fe(resample(reader.read(0, total), reader.samplerate, dp["sample_rate"]))
    if mel.max() <= DB_FLOOR:  # every frame at the dB floor: all samples are zero
        raise AudioError("silence only (all samples zero)")
    return mel


def _failure(path: str, exc: BaseException) -> dict[str, Any]:
    reason = str(exc) if isinstance(exc, AudioError) else f"{type(exc).__name__}: {exc}"
    return {"source": path, "error": reason}


def _task_stats(path: str, scratch_entry: Optional[str]) -> dict[str, Any]:
    """Statistics phase: per-bin sums of one file's dB mel; the mel itself goes to ``scratch/`` when the
    file is also to be cached, so the writing phase does not decode it again."""
    try:
        mel = _decode_db(path)
    except Exception as exc:  # noqa: BLE001 - any bad file is skipped with its reason, never fatal
        return _failure(path, exc)
    if scratch_entry:
        _atomic_save(_WORKER["scratch_dir"] / f"{scratch_entry}.npy", mel)
    total, total_sq, count = StatsAccumulator.sums(mel)
    return {"source": path, "sum": total, "sumsq": total_sq, "count": count, "seconds": _seconds(mel.shape[1])}


def _task_write(path: str, entry: str, standardizer: dict[str, Any]) -> dict[str, Any]:
    """Writing phase: dB mel (from ``scratch/`` or decoded), standardise, write ``mels/<entry>.npy`` (float16)."""
    scratch = _WORKER["scratch_dir"] / f"{entry}.npy"
    mel = None
    if scratch.is_file():
        try:
            mel = np.load(scratch)
        except (OSError, ValueError):
            mel = None  # unreadable scratch: decode instead
    try:
        if mel is None:
            mel = _decode_db(path)
        out = Standardizer.from_dict(standardizer)(mel).astype(np.float16)
    except Exception as exc:  # noqa: BLE001 - any bad file is skipped with its reason, never fatal
        return _failure(path, exc)
    _atomic_save(_WORKER["mels_dir"] / f"{entry}.npy", out)
    scratch.unlink(missing_ok=True)
    return {"source": path, "entry": f"{entry}.npy", "frames": int(out.shape[1]), "seconds": _seconds(out.shape[1])}


# ---- the worker pool ---------------------------------------------------------------------------------------
def _pool_context() -> multiprocessing.context.BaseContext:
    """fork on Linux (workers start in milliseconds and touch no torch state), spawn elsewhere."""
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


class _Workers:
    """Worker processes shared by the statistics and the writing phase of one build (the calling process
    itself when ``workers`` is 1). Tasks are tuples whose first item is the file's path."""

    def __init__(self, workers: int, dp: dict[str, Any], mels_dir: Path):
        self.workers, self._init = workers, (dp, str(mels_dir))
        self._pool: Optional[ProcessPoolExecutor] = None
        if workers <= 1:
            _init_worker(*self._init, limit_threads=False)

    def __enter__(self) -> "_Workers":
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=_pool_context(), initializer=_init_worker,
                                             initargs=self._init)
            self._pool.submit(int).result()  # start every worker now, before progress-bar threads exist
        return self._pool

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, fn: Callable[..., dict[str, Any]], tasks: list[tuple], desc: str) -> Iterator[dict[str, Any]]:
        """Yield ``fn(*task)`` for every task (completion order) with a tqdm bar of files/s and audio-hours/s."""
        if not tasks:
            return
        results = (fn(*t) for t in tasks) if self.workers <= 1 else self._parallel(fn, tasks)
        with tqdm(total=len(tasks), desc=desc, unit="file", mininterval=1.0) as bar:
            audio_s = 0.0
            for res in results:
                audio_s += res.get("seconds", 0.0)
                bar.set_postfix_str(f"{audio_s / 3600 / max(bar.format_dict['elapsed'], 1e-9):.3f} audio-h/s",
                                    refresh=False)
                bar.update()
                yield res

    def _parallel(self, fn: Callable[..., dict[str, Any]], tasks: list[tuple]) -> Iterator[dict[str, Any]]:
        todo, pending = iter(tasks), {}
        suspects: list[tuple] = []
        self._start()
        while True:
            for task in itertools.islice(todo, self.workers * IN_FLIGHT_PER_WORKER - len(pending)):
                pending[self._pool.submit(fn, *task)] = task
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            try:
                results = [f.result() for f in finished]
            except BrokenProcessPool:
                suspects.extend(pending.values())  # one of these killed its worker; find it alone
                pending.clear()
                self._close()
                self._start()
                continue
            for f in finished:
                del pending[f]
            yield from results
        yield from (self._alone(fn, task) for task in suspects)

    def _alone(self, fn: Callable[..., dict[str, Any]], task: tuple) -> dict[str, Any]:
        """Run one task by itself; if its worker dies, that file is the culprit."""
        try:
            return self._start().submit(fn, *task).result()
        except BrokenProcessPool:
            self._close()
            return {"source": task[0], "error": "worker process died while decoding (crash in the decoder?)"}


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
    pruned: int = 0


class MelCache:
    """The cache folder for one set of ``[data_process]`` settings."""

    def __init__(self, cache_dir: str | Path, dp: Any):
        self.dp = dp
        self.folder = Path(cache_dir) / f"mel-{cache_key(dp)}"
        self.mels_dir = self.folder / "mels"
        self.scratch_dir = self.folder / "scratch"
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
            _atomic_text(self.manifest_path, "".join(json.dumps(rec) + "\n" for key, rec in records.items()
                                                     if key not in dropped))
            for key in dropped:
                if "entry" in records[key]:
                    (self.mels_dir / records[key]["entry"]).unlink(missing_ok=True)
        return len(dropped)


def _fit_standardizer(dp: Any, population: list[str], pool: _Workers, scratch_for: dict[str, str],
                      record: Callable[[dict[str, Any]], None]) -> Standardizer:
    """Fit statistics on a seeded sample of ``population``. Sample files that are also to be cached
    (``scratch_for``: path -> entry) keep their dB mel in ``scratch/``, and their failures are recorded."""
    acc = StatsAccumulator(dp.n_mels)
    if dp.normalization in ("per_frequency", "global"):
        rng = np.random.default_rng(STATS_SEED)
        sample = sorted(population) if len(population) <= dp.stats_max_files else sorted(
            rng.choice(sorted(population), size=dp.stats_max_files, replace=False))
        sample.sort(key=lambda p: -(_identity(p) or (0,))[0])  # longest first: no straggler at the end
        sums: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        for res in pool.run(_task_stats, [(p, scratch_for.get(p)) for p in sample], "fitting statistics"):
            if "error" in res:
                if res["source"] in scratch_for:
                    record(res)
            else:
                sums[res["source"]] = (res["sum"], res["sumsq"], res["count"])
        for path in sorted(sums):  # a fixed order: the same statistics whatever order workers finish in
            acc.add_sums(*sums[path])
        if acc.count == 0:
            raise RuntimeError("no usable recording in the statistics sample: check the audio files")
    return Standardizer.fit(dp.normalization, acc)


def build_cache(recordings: pd.DataFrame, dp: Any, cache_dir: str | Path, workers: int = 1,
                stats_population: Optional[list[str]] = None, prune_under: Optional[str | Path] = None
                ) -> CacheResult:
    """Make sure every recording in ``recordings`` (column ``path``) has a cache entry; decode only what is missing.

    The standardisation statistics are fitted once per cache on a seeded sample of ``stats_population``
    (default: the recordings), e.g. the whole metadata when only a testing subset is processed.
    Unusable files are skipped with a reason (``skipped_files.csv``); nothing already cached is lost.
    With ``prune_under`` (the dataset folder, when ``recordings`` is its full listing), records of files under
    it that are no longer listed, or changed, are dropped from the manifest with their mel files.
    """
    cache = MelCache(cache_dir, dp)
    cache.mels_dir.mkdir(parents=True, exist_ok=True)
    settings = cache.folder / "settings.json"
    if not settings.is_file():
        _atomic_text(settings, json.dumps({"format_version": CACHE_FORMAT_VERSION, **dataclasses.asdict(dp)}, indent=1))
    _remove_stale_temporaries(cache.folder)
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
    todo.sort(key=lambda pe: -idents[pe[0]][0])  # longest first: no straggler at the end
    reused = len(done) + sum(1 for p in skipped if p in idents)
    standardizer = cache.load_standardizer()
    with _Workers(workers, dataclasses.asdict(dp), cache.mels_dir) as pool, \
            open(cache.manifest_path, "a") as manifest_file:
        def record(res: dict[str, Any]) -> None:
            path = res["source"]
            manifest_file.write(json.dumps({"source": path, "size": idents[path][0], "mtime_ns": idents[path][1],
                                            **res}) + "\n")
            manifest_file.flush()
            if "error" in res:
                skipped[path] = res["error"]
            else:
                done[path] = res

        if standardizer is None:
            shutil.rmtree(cache.scratch_dir, ignore_errors=True)  # left by a build killed before its statistics
            cache.scratch_dir.mkdir()
            population = [p for p in dict.fromkeys(stats_population or idents) if _identity(p) is not None]
            standardizer = _fit_standardizer(dp, population, pool, dict(todo), record)
            _atomic_text(cache.stats_path, json.dumps(standardizer.to_dict()))
        cache.scratch_dir.mkdir(exist_ok=True)
        rest = [(p, e, standardizer.to_dict()) for p, e in todo if p not in skipped]
        for res in pool.run(_task_write, rest, "preprocessing"):
            record(res)
    shutil.rmtree(cache.scratch_dir, ignore_errors=True)
    pruned = cache.prune(set(recordings["path"]), Path(prune_under)) if prune_under is not None else 0
    table = recordings[recordings["path"].isin(done.keys())].copy()
    table["entry"] = [str(cache.mels_dir / done[p]["entry"]) for p in table["path"]]
    table["frames"] = [done[p]["frames"] for p in table["path"]]
    table["seconds"] = [done[p]["seconds"] for p in table["path"]]
    skipped_df = pd.DataFrame(sorted(skipped.items()), columns=["path", "reason"])
    skipped_df.to_csv(cache.folder / "skipped_files.csv", index=False)
    log.info("preprocess: %d decoded, %d reused, %d skipped, %d stale records pruned; cache %s", len(todo), reused,
             len(skipped), pruned, cache.folder)
    return CacheResult(cache.folder, table.reset_index(drop=True), skipped_df, standardizer, len(todo), reused, pruned)
