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
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_on_a_local_cluster_gives_the_single_machine_rows(archive, local_cluster, tmp_path, capsys):
    out = tmp_path / "ray"
    assert detect.main(archive["base"] + ["--out-dir", str(out), "--ray", "auto", "--ray-actors", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["recordings"] == 15 and summary["unreadable"] == 1
    assert_same_tables(archive["single"], out, exact=False)
    assert (out / "raven" / "site_a__rec01.Table.1.selections.txt").is_file()


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


def test_a_rerun_after_a_stopped_ray_run_skips_finished_recordings(archive, tmp_path):
    out = tmp_path / "stopped"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "detect.py"), *archive["base"], "--out-dir", str(out), "--ray", "auto",
           "--ray-actors", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    summary = out / "file_summary.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if summary.is_file() and len(summary.read_text().splitlines()) > 3:  # some recordings finished
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(summary.read_text().splitlines()) - 1
    assert 0 < done < 14, "the run was stopped mid-way"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rerun = json.loads(result.stdout.strip().splitlines()[-1])
    assert rerun["skipped_done"] >= done and rerun["recordings"] == 15 - rerun["skipped_done"]
    assert_same_tables(archive["single"], out, exact=False)  # every recording once, none lost or doubled
    changed = subprocess.run([*cmd[:-4], "--hop-s", "5", "--out-dir", str(out)], env=env, capture_output=True,
                             text=True, timeout=120)
    assert changed.returncode == 2 and "other settings (hop_s)" in changed.stderr
