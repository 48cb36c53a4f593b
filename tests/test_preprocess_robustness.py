"""The cache under bad input and interruption: skipped with a reason, resumable after kill -9."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import dataloader.frontend as frontend_module  # its block sizes are patched
from dataloader.cache_faults import CacheEnvironmentError
from dataloader.preprocess import MelCache, build_cache, fit_standardizer
from training.config import DataProcessConfig

ROOT = Path(__file__).resolve().parents[1]


def chirp(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * (500 + 300 * t) * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def table_of(paths) -> pd.DataFrame:
    paths = [str(p) for p in paths]
    return pd.DataFrame({"path": paths, "primary_label": "a", "secondary_labels": [[] for _ in paths],
                         "group": [Path(p).stem for p in paths], "filename": [Path(p).name for p in paths]})


def test_each_bad_input_is_skipped_with_its_reason_and_other_rates_are_converted(tmp_path):
    good = []
    for sr in (8000, 16000, 22050, 44100, 48000):
        path = tmp_path / f"stereo_{sr}.wav"
        sf.write(path, chirp(2.0, sr, channels=2), sr)
        good.append(path)
    sf.write(tmp_path / "ok.ogg", chirp(3.0, 32000), 32000, format="OGG", subtype="VORBIS")
    good.append(tmp_path / "ok.ogg")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 32000)
    sf.write(tmp_path / "silent.wav", np.zeros(32000, dtype=np.float32), 32000)
    nan = chirp(1.0, 32000)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 32000, subtype="FLOAT")
    (tmp_path / "garbage.ogg").write_bytes(os.urandom(4000))
    sf.write(tmp_path / "whole.ogg", chirp(6.0, 32000), 32000, format="OGG", subtype="VORBIS")
    data = (tmp_path / "whole.ogg").read_bytes()
    (tmp_path / "truncated.ogg").write_bytes(data[:len(data) // 2])  # an interrupted download
    (tmp_path / "whole.ogg").unlink()
    bad = {"empty.wav": "zero-length", "silent.wav": "silence", "nan.wav": "non-finite", "garbage.ogg": "unreadable",
           "absent.ogg": "missing", "truncated.ogg": "truncated"}
    result = build_cache(table_of(good + [tmp_path / n for n in bad]), DataProcessConfig(), tmp_path / "cache", 1)
    reasons = {Path(p).name: r for p, r in zip(result.skipped["path"], result.skipped["reason"])}
    for name, word in bad.items():
        assert word in reasons[name], (name, reasons.get(name))
    assert sorted(Path(p).name for p in result.table["path"]) == sorted(p.name for p in good)
    for seconds in result.table["seconds"]:
        assert seconds == pytest.approx(2.0, abs=0.05) or seconds == pytest.approx(3.0, abs=0.05)
    listed = pd.read_csv(result.folder / "skipped_files.csv")
    assert set(listed["path"].map(lambda p: Path(p).name)) == set(bad)


def test_standardised_cache_has_zero_mean_unit_std_per_bin_on_the_fitted_recordings(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        path = tmp_path / f"r{i}.wav"
        sf.write(path, (rng.standard_normal(32000 * 3) * 0.05 + chirp(3.0, 32000) * (i + 1) / 6).astype(np.float32),
                 32000)
        paths.append(path)
    dp = DataProcessConfig(n_mels=32)
    result = build_cache(table_of(paths), dp, tmp_path / "cache", 1)
    train = result.table.iloc[:4]  # statistics from the training recordings only
    std = fit_standardizer(train, dp, result.folder)
    z = np.concatenate([std.apply(np.load(e)) for e in train["entry"]], axis=1).astype(np.float64)
    assert np.abs(z.mean(axis=1)).max() < 0.02
    assert np.abs(z.std(axis=1) - 1).max() < 0.02
    (result.folder / "sums.bin").unlink()  # the per-file sums are a shortcut: the mels give the same statistics
    np.testing.assert_allclose(fit_standardizer(train, dp, result.folder).mean, std.mean, atol=0.01)  # dB
    np.testing.assert_allclose(fit_standardizer(train, dp, result.folder).std, std.std, rtol=1e-3)
    other = fit_standardizer(result.table.iloc[2:], dp, result.folder)  # another fold, other statistics
    assert not np.array_equal(other.mean, std.mean)
    clip = fit_standardizer(train, DataProcessConfig(n_mels=32, normalization="per_clip"), result.folder)
    mel = np.load(train["entry"].iloc[0])
    z = clip.apply(mel, train["clip_mean"].iloc[0], train["clip_std"].iloc[0]).astype(np.float64)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01  # per_clip: the recording's own statistics


BUILD = """
import sys, pandas as pd
sys.path.insert(0, {root!r})
from dataloader.preprocess import build_cache
from training.config import DataProcessConfig
paths = {paths!r}
table = pd.DataFrame({{"path": paths, "primary_label": "a", "secondary_labels": [[] for _ in paths],
                      "group": paths, "filename": paths}})
build_cache(table, DataProcessConfig(), {cache!r}, workers=1)
"""


def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_cache(tmp_path):
    paths = []
    for i in range(40):
        path = tmp_path / f"r{i:02d}.ogg"
        sf.write(path, chirp(20.0 + i % 5, 32000), 32000, format="OGG", subtype="VORBIS")
        paths.append(str(path))
    script = tmp_path / "build.py"
    script.write_text(BUILD.format(root=str(ROOT), paths=paths, cache=str(tmp_path / "killed")))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = MelCache(tmp_path / "killed", DataProcessConfig())
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if cache.manifest_path.is_file() and len(cache.manifest_path.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the build finished before it could be killed; make the corpus larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = cache.load_manifest()
    assert 0 < len(finished) < len(paths)
    stamps = {rec["entry"]: (cache.mels_dir / rec["entry"]).stat().st_mtime_ns for rec in finished.values()}

    resumed = build_cache(table_of(paths), DataProcessConfig(), tmp_path / "killed", workers=1)
    assert resumed.decoded <= len(paths) - len(finished) and len(resumed.table) == len(paths)
    for entry, stamp in stamps.items():
        assert (cache.mels_dir / entry).stat().st_mtime_ns == stamp, "finished entries are not rewritten"
    clean = build_cache(table_of(paths), DataProcessConfig(), tmp_path / "clean", workers=1)
    for a, b in zip(sorted(resumed.table["entry"], key=lambda p: Path(p).name),
                    sorted(clean.table["entry"], key=lambda p: Path(p).name)):
        np.testing.assert_array_equal(np.load(a), np.load(b))
    for name in ("killed", "clean"):  # the statistics of a resumed cache are those of an uninterrupted one
        folder = MelCache(tmp_path / name, DataProcessConfig()).folder
        stats = fit_standardizer(resumed.table if name == "killed" else clean.table, DataProcessConfig(), folder)
        assert len(MelCache(tmp_path / name, DataProcessConfig()).sums.load()) == len(paths)
        if name == "killed":
            killed_stats = stats
    np.testing.assert_allclose(killed_stats.mean, stats.mean, rtol=1e-6)


def _cache_one(pre, path: Path, mels_dir: Path) -> np.ndarray:
    pre._init_worker(dataclasses.asdict(DataProcessConfig()), str(mels_dir), limit_threads=False)
    mels_dir.mkdir(exist_ok=True)
    res = pre._task_write(str(path), "x")
    assert "error" not in res, res
    return np.load(mels_dir / res["entry"])


def test_a_long_file_is_processed_in_blocks_exactly_as_whole(tmp_path, monkeypatch):
    import dataloader.preprocess as pre
    from dataloader.audio import load_audio
    from dataloader.mel import MelTransform

    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(32000 * 20 + 77) * 0.05 + chirp(20.0 + 77 / 32000, 32000)).astype(np.float32)
    sf.write(tmp_path / "long.wav", audio, 32000, subtype="FLOAT")
    fe = MelTransform.from_config(DataProcessConfig())
    whole = fe(load_audio(tmp_path / "long.wav", 32000))
    blocks = list(fe.blocks(lambda a, b: audio[a:b], audio.size, 96))
    assert len(blocks) > 5
    np.testing.assert_allclose(np.concatenate(blocks, axis=1), whole, atol=1e-4)
    monkeypatch.setattr(frontend_module, "LONG_FILE_S", 5.0)  # 20 s counts as long here ...
    monkeypatch.setattr(frontend_module, "BLOCK_S", 3.0)  # ... and is written in 3-s blocks into a memory-mapped .npy
    calls = []
    original = MelTransform.blocks
    monkeypatch.setattr(MelTransform, "blocks", lambda self, *a: calls.append(a) or original(self, *a))
    cached = _cache_one(pre, tmp_path / "long.wav", tmp_path / "mels")
    assert calls, "the block path was taken"
    assert cached.dtype == np.float16 and cached.shape == whole.shape
    assert np.abs(cached.astype(np.float32) - whole).max() <= 0.07  # float16 rounding of -100..0 dB


def test_streamed_resampling_of_a_long_file_equals_resampling_it_whole(tmp_path, monkeypatch):
    import dataloader.preprocess as pre
    from dataloader.audio import MonoReader, ResampledReader, load_audio

    stereo = chirp(21.3, 44100, channels=2)
    sf.write(tmp_path / "long44k.flac", stereo, 44100, subtype="PCM_24")
    whole = load_audio(tmp_path / "long44k.flac", 32000)
    with MonoReader(tmp_path / "long44k.flac") as reader:
        stream = ResampledReader(reader, reader.frames, 32000, block=10_000)
        assert stream.length == whole.size
        parts = [stream.read(a, min(a + 7_000, stream.length)) for a in range(0, stream.length, 6_000)]
    for a, part in zip(range(0, whole.size, 6_000), parts):
        np.testing.assert_array_equal(part, whole[a:a + part.size])  # bit-identical, overlapping forward reads
    monkeypatch.setattr(frontend_module, "LONG_FILE_S", 5.0)
    monkeypatch.setattr(frontend_module, "BLOCK_S", 3.0)
    cached = _cache_one(pre, tmp_path / "long44k.flac", tmp_path / "mels")
    assert np.abs(cached.astype(np.float32) - pre._WORKER["frontend"].transform(whole)).max() <= 0.07


def test_removed_recordings_drop_out_of_the_manifest_but_other_datasets_and_subsets_stay(tmp_path):
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir(), other.mkdir()
    paths = []
    for k in range(4):
        sf.write(data / f"r{k}.wav", chirp(1.0 + k, 32000), 32000)
        paths.append(data / f"r{k}.wav")
    sf.write(other / "o.wav", chirp(2.0, 32000), 32000)
    cache_dir = tmp_path / "cache"
    full = build_cache(table_of(paths + [other / "o.wav"]), DataProcessConfig(), cache_dir, 1, prune_under=data)
    entries = dict(zip(full.table["path"], full.table["entry"]))
    subset = build_cache(table_of(paths[:1]), DataProcessConfig(), cache_dir, 1)  # a testing subset prunes nothing
    assert subset.pruned == 0 and all(Path(e).is_file() for e in entries.values())
    sf.write(data / "r1.wav", chirp(5.0, 32000), 32000)  # r1 changed, r2 removed from the metadata
    again = build_cache(table_of([paths[0], paths[1], paths[3]]), DataProcessConfig(), cache_dir, 1, prune_under=data)
    assert again.decoded == 1 and again.pruned == 2
    sources = {key[0] for key in MelCache(cache_dir, DataProcessConfig()).load_manifest()}
    assert sources == {str(paths[0]), str(paths[1]), str(paths[3]), str(other / "o.wav")}
    assert not Path(entries[str(paths[2])]).exists() and not Path(entries[str(paths[1])]).exists()
    assert Path(entries[str(other / "o.wav")]).is_file(), "another dataset's entries are never touched"


def test_a_file_that_kills_its_worker_is_skipped_and_the_rest_is_cached(tmp_path, monkeypatch):
    from dataloader.features import FrontEnd

    paths = []
    for k in range(5):
        sf.write(tmp_path / f"r{k}.wav", chirp(1.0, 32000), 32000)
        paths.append(tmp_path / f"r{k}.wav")
    original = FrontEnd.feature_blocks
    # a decoder segfault, as libsndfile can do on malformed input (workers are forked: they see the patch)
    monkeypatch.setattr(FrontEnd, "feature_blocks", lambda self, reader, limit=None: os._exit(11)
                        if reader.path.name == "r2.wav" else original(self, reader, limit))
    result = build_cache(table_of(paths), DataProcessConfig(), tmp_path / "cache", workers=2)
    assert sorted(result.table["path"]) == sorted(str(p) for p in paths if p.name != "r2.wav")
    assert "worker process died" in dict(zip(result.skipped["path"], result.skipped["reason"]))[str(paths[2])]


def test_temporaries_of_killed_builds_are_removed(tmp_path):
    paths = [tmp_path / "a.wav"]
    sf.write(paths[0], chirp(1.0, 32000), 32000)
    cache = MelCache(tmp_path / "cache", DataProcessConfig())
    cache.mels_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = cache.mels_dir / f"abc.npy.tmp-{int(dead.stdout)}"
    live = cache.mels_dir / f"def.npy.tmp-{os.getpid()}"  # a build running now keeps its files
    stale.write_bytes(b"partial"), live.write_bytes(b"partial")
    build_cache(table_of(paths), DataProcessConfig(), tmp_path / "cache", 1)
    assert not stale.exists() and live.exists()


def test_a_full_disk_stops_the_cache_records_nothing_about_the_file_and_the_next_run_retries(tmp_path, monkeypatch):
    import errno

    import dataloader.preprocess as preprocess

    paths = []
    for k in range(3):
        paths.append(tmp_path / f"clip{k}.wav")
        sf.write(paths[-1], chirp(2.0 + k, 32000), 32000)
    real_save = preprocess.write_npy

    def full_for_clip1(path, array):  # the disk fills while the second file is written (in the worker)
        if array.shape[1] > 150:
            path.write_bytes(b"partial")  # its temporary name: the atomic write removes it
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(path, array)

    monkeypatch.setattr(preprocess, "write_npy", full_for_clip1)
    with pytest.raises(CacheEnvironmentError, match="no space left on device writing the cache of .*clip"):
        build_cache(table_of(paths), DataProcessConfig(), tmp_path / "cache", workers=1)
    folder = next((tmp_path / "cache").glob("mel-*"))
    lines = (folder / "manifest.jsonl").read_text().splitlines() if (folder / "manifest.jsonl").exists() else []
    assert not any("error" in json.loads(line) for line in lines), "nothing recorded as the file's fault"
    monkeypatch.setattr(preprocess, "write_npy", real_save)  # space returns
    result = build_cache(table_of(paths), DataProcessConfig(), tmp_path / "cache", workers=1)
    assert len(result.table) == 3 and result.skipped.empty
    assert not list((tmp_path / "cache").rglob("*.tmp-*")), "no litter"


def test_an_environment_error_recorded_by_an_older_version_is_retried_not_skipped(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, chirp(2.0, 32000), 32000)
    cache = MelCache(tmp_path / "cache", DataProcessConfig())
    cache.folder.mkdir(parents=True)
    st = os.stat(path)
    record = {"source": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
              "error": "OSError: [Errno 28] No space left on device"}
    cache.manifest_path.write_text(json.dumps(record) + "\n")
    result = build_cache(table_of([path]), DataProcessConfig(), tmp_path / "cache", workers=1)
    assert len(result.table) == 1 and result.skipped.empty


def _in_subprocess(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + code],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_run_waits_for_the_cache_lock_and_a_killed_holder_never_blocks_it(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    path = tmp_path / "a.wav"
    sf.write(path, chirp(2.0, 32000), 32000)
    folder = MelCache(tmp_path / "cache", DataProcessConfig()).folder
    holder = _in_subprocess(f"from pathlib import Path\nimport time\nfrom dataloader.cache_faults import cache_lock\n"
                            f"with cache_lock(Path({str(folder)!r})):\n    print('locked', flush=True)\n"
                            f"    time.sleep(2.5)\n")
    assert holder.stdout.readline().strip() == "locked"
    t0 = time.perf_counter()
    assert len(build_cache(table_of([path]), DataProcessConfig(), tmp_path / "cache", workers=1).table) == 1
    assert time.perf_counter() - t0 > 1.0 and "another run is preprocessing into" in caplog.text
    holder.wait(timeout=30)
    killed = _in_subprocess(f"from pathlib import Path\nimport time\nfrom dataloader.cache_faults import cache_lock\n"
                            f"with cache_lock(Path({str(folder)!r})):\n    print('locked', flush=True)\n"
                            f"    time.sleep(600)\n")
    assert killed.stdout.readline().strip() == "locked"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    t0 = time.perf_counter()
    build_cache(table_of([path]), DataProcessConfig(), tmp_path / "cache", workers=1)
    assert time.perf_counter() - t0 < 10, "the kernel released the killed run's lock"


def test_a_pruning_run_and_an_appending_run_together_lose_no_records(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, n in ((one, 8), (two, 40)):
        folder.mkdir()
        for k in range(n):
            sf.write(folder / f"{folder.name}{k}.wav", chirp(1.0 + 0.1 * k, 32000), 32000)
    cache_dir = tmp_path / "cache"
    build_cache(table_of(sorted(one.glob("*.wav"))), DataProcessConfig(), cache_dir, workers=1)
    (one / "one0.wav").unlink()  # its metadata lost a row: the next full run of `one` prunes
    code = ("import pandas as pd\nfrom pathlib import Path\nfrom dataloader.preprocess import build_cache\n"
            "from training.config import DataProcessConfig\n"
            "def run(folder, prune):\n"
            "    paths = [str(p) for p in sorted(Path(folder).glob('*.wav'))]\n"
            "    build_cache(pd.DataFrame({'path': paths}), DataProcessConfig(), {cache!r}, workers=1,\n"
            "                prune_under=folder if prune else None)\n")
    code = code.replace("{cache!r}", repr(str(cache_dir)))
    prune = _in_subprocess(code + f"import time\nfor k in range(1, 8):  # seven rewrites of the manifest\n"
                                  f"    Path({str(one)!r}, f'one{{k}}.wav').unlink()\n    run({str(one)!r}, True)\n"
                                  f"    time.sleep(0.05)\n")
    append = _in_subprocess(code + f"run({str(two)!r}, False)\n")
    for proc in (prune, append):
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    records = MelCache(cache_dir, DataProcessConfig()).load_manifest()
    sources = {key[0] for key in records}
    assert {str(p) for p in two.glob("*.wav")} <= sources, "the appending run's records survive the prune"
    assert not any(s.startswith(str(one / "one")) for s in sources) and len(sources) == 40
