"""Archives larger than one machine (issue 27): detect.py on a local Ray cluster gives the single-machine rows;
shards of a job array cover every recording once and merge into the unsharded run; a rerun skips finished files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import detect
from dataloader.audio import audio_tree, parse_shard, shard_files
from inference import merge_detections

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("scores", "detections", "raven_selections", "file_summary")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from test_detections import noise, stand_in

    root = tmp_path_factory.mktemp("archive")
    audio = root / "audio"
    for k in range(14):
        folder = audio / ("site_a" if k % 2 else "site-b") / ("deep" if k % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        noise(folder / f"rec{k:02d}.wav", 6 + (k * 7) % 11, seed=k)
    (audio / "site_a" / "broken.wav").write_bytes(b"RIFF....not audio")
    model = stand_in(root / "model.pt", ["x", "y", "z"])
    base = ["--checkpoint", str(model), "--audio-dir", str(audio), "--min-score", "0.0", "--threshold", "0.5",
            "--hop-s", "2.5"]
    single = root / "single"
    assert detect.main(base + ["--out-dir", str(single)]) == 0
    return {"root": root, "audio": audio, "base": base, "single": single}


def table(folder: Path, name: str) -> pd.DataFrame:
    frame = pd.read_csv(folder / f"{name}.csv", dtype={"file": str, "File": str, "class": str})
    return frame.sort_values(list(frame.columns[:4] if name != "file_summary" else frame.columns[:1])
                             ).reset_index(drop=True)


def assert_same_tables(a: Path, b: Path, exact: bool = True) -> None:
    for name in (*TABLES, "unreadable"):
        left, right = table(a, name), table(b, name)
        if exact:
            pd.testing.assert_frame_equal(left, right)
        else:  # other batches through the model: float rounding in the last digits
            pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in (a / "raven").iterdir()) == sorted(p.name for p in (b / "raven").iterdir())


@pytest.fixture(scope="module")
def local_cluster():
    """One local 2-CPU cluster for the module; yields its address, which a driver in a subprocess joins."""
    import ray

    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


def test_shards_cover_every_recording_once_and_merge_into_the_unsharded_run(archive, tmp_path):
    files = audio_tree(archive["audio"])
    shards = [shard_files(files, archive["audio"], i, 3) for i in range(3)]
    assert sorted(f for s in shards for f in s) == files and all(shards)
    assert shard_files(list(reversed(files)), archive["audio"], 1, 3) == list(reversed(shards[1]))  # order-free
    for bad in ("3/3", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    folders = []
    for i in range(3):
        folders.append(tmp_path / f"shard{i}")
        assert detect.main(archive["base"] + ["--out-dir", str(folders[-1]), "--shard", f"{i}/3"]) == 0
    merged = tmp_path / "merged"
    assert merge_detections.main([*map(str, folders), "--out", str(merged)]) == 0
    for name in (*TABLES, "unreadable"):  # the same rows in the same order as the one run wrote them
        pd.testing.assert_frame_equal(pd.read_csv(merged / f"{name}.csv", dtype=str),
                                      pd.read_csv(archive["single"] / f"{name}.csv", dtype=str))
    assert_same_tables(archive["single"], merged)
    assert merge_detections.main([str(folders[0]), str(folders[0]), "--out", str(tmp_path / "twice")]) == 2


def test_a_ray_run_killed_mid_way_then_rerun_gives_the_single_machine_rows(archive, local_cluster, tmp_path, capsys,
                                                                           caplog):
    """A driver on the cluster (a subprocess joined to the module's cluster through RAY_ADDRESS, one model actor) is
    killed after some recordings; the rerun (this process, two model actors) skips them, and the tables are the
    single machine's: every recording once, none lost or doubled."""
    out = tmp_path / "stopped"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": local_cluster}
    args = [*archive["base"], "--out-dir", str(out), "--ray", "auto", "--ray-actors"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "detect.py"), *args, "1"], env=env, stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "stopped.log", "w"), start_new_session=True)
    summary = out / "file_summary.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if summary.is_file() and len(summary.read_text().splitlines()) > 3:  # some recordings finished
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert summary.is_file(), (tmp_path / "stopped.log").read_text()[-3000:]
    done = len(summary.read_text().splitlines()) - 1
    assert 0 < done < 14, "the run was stopped mid-way"
    capsys.readouterr()
    assert detect.main([*args, "2"]) == 0
    rerun_out = capsys.readouterr()
    rerun = json.loads(rerun_out.out.strip().splitlines()[-1])
    assert rerun["skipped_done"] >= done and rerun["recordings"] == 15 - rerun["skipped_done"]
    try:
        assert_same_tables(archive["single"], out, exact=False)
    except AssertionError as exc:  # what the two runs left, to tell a lost line from a doubled one
        left = {p.name: p.read_text()[-600:] for p in out.glob("*.csv") if p.name in ("unreadable.csv",
                                                                                       "file_summary.csv")}
        raise AssertionError(f"{exc}\n{left}\n{rerun_out.err[-3000:]}") from None
    assert (out / "raven" / "site_a__rec01.Table.1.selections.txt").is_file()
    with caplog.at_level("ERROR", logger="detect"):
        assert detect.main([*archive["base"], "--hop-s", "5", "--out-dir", str(out)]) == 2
    assert "other settings (hop_s)" in caplog.text


# ---- the embedding database, the embedding table and the cache on the cluster --------------------------------
@pytest.fixture(scope="module")
def recordings_tree(tmp_path_factory):
    from tests.archive_audio import make_archive

    base = tmp_path_factory.mktemp("tree")
    paths = make_archive(base / "archive", seconds=9.0)
    return {"base": base, **paths}


def database_rows(path: Path) -> tuple[pd.DataFrame, "np.ndarray", list]:
    """(windows by file and start, their vectors in that order, the unreadable list) of a database."""
    import numpy as np

    from archive.database import open_archive, vectors, windows_frame

    db = open_archive(path, readonly=True)
    try:
        frame = windows_frame(db).sort_values(["file", "start_s"]).reset_index(drop=True)
        vecs = np.asarray(vectors(db, frame["window_id"].to_numpy()), dtype=np.float32)
        durations = dict(db.db.execute("SELECT filename, duration_s FROM recordings"))
    finally:
        db.db.close()
    unreadable = path / "unreadable.csv"
    listed = sorted(pd.read_csv(unreadable)["file"]) if unreadable.is_file() else []
    frame["duration_s"] = frame["file"].map(durations)
    return frame[["file", "start_s", "end_s", "duration_s"]], vecs, listed


def test_the_archive_database_on_ray_and_from_merged_shards_equals_one_machines(recordings_tree, local_cluster,
                                                                                 tmp_path):
    import numpy as np

    from archive import merge
    from archive.build import build_archive

    root = recordings_tree["root"]
    single = build_archive(root, tmp_path / "single", "birdnet", workers=1)
    on_ray = build_archive(root, tmp_path / "ray", "birdnet", ray="auto", ray_actors=2)
    assert (single.added, single.windows) == (on_ray.added, on_ray.windows) == (4, 12)
    want, want_vecs, want_bad = database_rows(tmp_path / "single")
    got, got_vecs, got_bad = database_rows(tmp_path / "ray")
    pd.testing.assert_frame_equal(want, got)
    np.testing.assert_allclose(got_vecs, want_vecs, atol=2e-3)  # float16 vectors in the index
    assert want_bad == got_bad == ["site_b/broken.wav"]
    assert build_archive(root, tmp_path / "ray", "birdnet", ray="auto").added == 0  # a rerun adds nothing

    shards = []
    for i in range(2):
        shards.append(tmp_path / f"shard{i}")
        build_archive(root, shards[-1], "birdnet", workers=1, shard=(i, 2))
    assert all(database_rows(s)[0]["file"].nunique() for s in shards)
    assert merge.main(["--db", str(tmp_path / "merged"), *map(str, shards)]) == 0
    merged, merged_vecs, _ = database_rows(tmp_path / "merged")
    pd.testing.assert_frame_equal(want, merged)
    np.testing.assert_array_equal(merged_vecs, want_vecs)
    assert merge.main(["--db", str(tmp_path / "twice"), str(shards[0]), str(shards[0])]) == 2
    assert merge.main(["--db", str(tmp_path / "merged"), str(shards[1])]) == 2  # already in the output
    build_archive(root, tmp_path / "other_hop", "birdnet", hop_s=1.5, workers=1, shard=(0, 2))
    assert merge.main(["--db", str(tmp_path / "mixed"), str(shards[1]), str(tmp_path / "other_hop")]) == 2


def embedding_table(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(["file", "start_s"]).reset_index(drop=True)


def test_the_embedding_table_on_ray_sharded_and_resumed_equals_one_run(recordings_tree, local_cluster, tmp_path,
                                                                      monkeypatch):
    from inference import embed

    root = str(recordings_tree["root"])
    base = ["--model", "birdnet", "--audio-dir", root]
    logits = [*base, "--logits"]  # two outputs per chunk through the actors
    assert embed.main([*logits, "--out", str(tmp_path / "logits.parquet")]) == 0
    assert pd.read_parquet(tmp_path / "logits.parquet").shape == (8, 4 + 1024 + 6522)
    assert embed.main([*logits, "--out", str(tmp_path / "ray.parquet"), "--ray", "auto", "--ray-actors", "2"]) == 0
    pd.testing.assert_frame_equal(embedding_table(tmp_path / "ray.parquet"),
                                  embedding_table(tmp_path / "logits.parquet"), check_exact=False, rtol=1e-4, atol=1e-5)
    assert embed.main([*base, "--out", str(tmp_path / "one.parquet")]) == 0
    one = pd.read_parquet(tmp_path / "one.parquet")
    assert list(one["file"].unique()) == ["site_a/dawn_01.wav", "site_a/dawn_02.wav", "site_b/night_01.wav",
                                          "site_b/night_02.wav"]  # the files' order; the unreadable one skipped
    assert one.shape == (8, 4 + 1024) and not (tmp_path / "one.parquet.parts").exists()

    shards = [tmp_path / f"shard{i}.parquet" for i in range(3)]
    for i, shard in enumerate(shards):
        assert embed.main([*base, "--out", str(shard), "--shard", f"{i}/3"]) == 0
    assert embed.main(["--out", str(tmp_path / "merged.parquet"), "--merge", *map(str, shards)]) == 0
    pd.testing.assert_frame_equal(embedding_table(tmp_path / "merged.parquet"), embedding_table(tmp_path / "one.parquet"))
    full = next(s for s in shards if len(pd.read_parquet(s)))
    assert embed.main(["--out", str(tmp_path / "x.parquet"), "--merge", str(full), str(full)]) == 2

    # a run stopped after two recordings (one part each), then rerun: the two are skipped, the table is whole
    calls = {"n": 0}
    real = embed.RowEmbeddingWork.frames

    def stop_after_two(self, path):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(self, path)

    monkeypatch.setattr(embed.RowEmbeddingWork, "frames", stop_after_two)
    out = tmp_path / "stopped.parquet"
    with pytest.raises(KeyboardInterrupt):
        embed.main([*base, "--out", str(out), "--flush-every", "1"])
    monkeypatch.undo()
    assert len(pd.read_csv(tmp_path / "stopped.parquet.parts" / "done.csv")) == 2
    assert embed.main([*logits, "--out", str(out)]) == 2  # other settings (logits) refused
    assert embed.main([*base, "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(embedding_table(out), embedding_table(tmp_path / "one.parquet"))


def test_the_cache_preprocessed_on_ray_equals_the_local_one(local_cluster, tmp_path):
    import numpy as np

    from dataloader.preprocess import build_cache
    from test_features_cache import recordings
    from utils.config_schema import DataProcessConfig

    table = recordings(tmp_path, n=6)
    local = build_cache(table, DataProcessConfig(), tmp_path / "local", workers=1)
    on_ray = build_cache(table, DataProcessConfig(), tmp_path / "ray", ray="auto")
    assert on_ray.decoded == 6 and list(on_ray.table["path"]) == list(local.table["path"])
    for a, b in zip(local.table["entry"], on_ray.table["entry"]):
        np.testing.assert_array_equal(np.load(a), np.load(b))
    for column in ("frames", "seconds", "clip_mean", "clip_std"):
        np.testing.assert_allclose(on_ray.table[column], local.table[column])
    sums = [(Path(c.folder) / "sums.bin").read_bytes() for c in (local, on_ray)]
    assert len(sums[0]) == len(sums[1]) > 0
    assert build_cache(table, DataProcessConfig(), tmp_path / "ray", ray="auto").decoded == 0
