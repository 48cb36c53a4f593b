"""detect.py on a Ray cluster against one machine, printed as JSON lines (ratios within the same run).

    python benchmarks/ray_cluster.py [--parts cluster overhead memory] [--files 200] [--seconds 60]
                                     [--checkpoint CKPT]

Without ``--checkpoint`` an efficientnet_b0 with random weights and 182 classes stands in (the rows and the speed do
not depend on the weights). Recordings are generated (noise with chirps, ``--seconds`` long). Rows:

1. ``cluster``: a two-node cluster on this machine (``ray start --head`` and a second ``ray start --address`` on
   loopback, 1 CPU each); ``detect.py --ray <head>`` over ``--files`` recordings against the single-machine run
   (the same detections: ``same_detections``, largest score difference); then the same run again with the second
   node killed (SIGKILL to its process group) once a fifth of the recordings are done: it must still finish with
   every recording once (``recordings_once``) and the same detections;
2. ``overhead``: windows/s of ``--ray`` on one local node (this machine's cores) vs today's path on the same files
   (target >= 0.9);
3. ``memory``: the peak RSS of the driver, and the peak PSS of every Ray process together (sampled every 0.2 s; PSS
   counts pages the workers share once), for 100 and 1,000 short recordings: flat with the archive's size;
4. ``projection``: hours for a 10,000-hour archive on a node like this one, from row 2's real-time factor;
5. ``embeddings`` (``--embed-files`` of the recordings, BirdNET V2.4): ``python -m archive.build`` (processes on
   every core) and ``python -m inference.embed`` (one process) against the same commands with ``--ray auto`` on a
   local cluster: audio hours per hour, and whether the outputs are the same (database windows and vectors; table
   rows and values).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.detections import emit, short_recordings  # noqa: E402

PORT = 6391
# token authentication on (Ray generates ~/.ray/auth_token; every node and driver here reads the same file)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0",
       "RAY_AUTH_MODE": "token"}


def recordings(folder: Path, count: int, seconds: float) -> Path:
    """``count`` WAV recordings of ``seconds`` (``short_recordings``' sound, tiled to the length)."""
    import soundfile as sf  # noqa: PLC0415

    base = short_recordings(folder / "_base", min(count, 20))
    clips = sorted(base.iterdir())
    for k in range(count):
        x, sr = sf.read(clips[k % len(clips)], dtype="float32")
        n = int(seconds * sr)
        sf.write(folder / f"rec_{k:04d}.wav", np.tile(x, -(-n // len(x)))[:n], sr, subtype="PCM_16")
    for clip in clips:
        clip.unlink()
    base.rmdir()
    return folder


def detect(model: Path, audio: Path, out: Path, extra: list[str] = (), env: Optional[dict] = None,
           kill: Optional[callable] = None) -> dict[str, Any]:
    """``detect.py`` in a child process, fresh into ``out``; its JSON line, plus the peak PSS of every Ray process
    together (sampled) and the wall time. ``kill(out)``: called while it runs (e.g. to stop a node)."""
    cmd = [sys.executable, str(ROOT / "detect.py"), "--checkpoint", str(model), "--audio-dir", str(audio),
           "--out-dir", str(out), "--min-score", "0.0", *extra]
    peak = {"ray_pss_mb": 0.0}
    shutil.rmtree(out, ignore_errors=True)  # a fresh run (detect.py would resume a finished one)
    stop = threading.Event()

    def sample() -> None:
        import psutil  # noqa: PLC0415 - Ray's own dependency

        while not stop.is_set():
            total = 0.0
            for proc in psutil.process_iter(["cmdline"]):
                line = " ".join(proc.info["cmdline"] or [])
                if "ray::" in line or "site-packages/ray/" in line:  # workers, raylet, GCS and Ray's agents
                    try:  # PSS: shared pages (torch's libraries in every worker) counted once in the sum
                        total += proc.memory_full_info().pss / 2 ** 20
                    except (psutil.Error, AttributeError):
                        continue
            peak["ray_pss_mb"] = max(peak["ray_pss_mb"], total)
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill is not None:
        threading.Thread(target=kill, args=(out,), daemon=True).start()
    stdout, stderr = proc.communicate()
    stop.set()
    if proc.returncode != 0:
        raise RuntimeError(f"detect.py failed ({proc.returncode}): {stderr[-3000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "wall_s": round(time.perf_counter() - t0, 1),
            "ray_pss_mb": round(peak["ray_pss_mb"], 1)}


def compare(a: Path, b: Path) -> dict[str, Any]:
    """Whether two runs' detections are the same, the largest score difference, and whether every recording is
    listed once."""
    da, db = (pd.read_csv(p / "detections.csv").sort_values(["file", "class", "start_s"]).reset_index(drop=True)
              for p in (a, b))
    sa, sb = (pd.read_csv(p / "scores.csv").sort_values(["file", "start_s", "class"]).reset_index(drop=True)
              for p in (a, b))
    files = pd.read_csv(b / "file_summary.csv")["file"]
    return {"same_detections": bool(len(da) == len(db) and (da[["file", "class", "start_s", "end_s"]]
                                                            == db[["file", "class", "start_s", "end_s"]]).all().all()),
            "detections": len(db), "score_rows_equal": len(sa) == len(sb),
            "max_score_diff": float(np.abs(sa["score"].to_numpy() - sb["score"].to_numpy()).max())
            if len(sa) == len(sb) else None,
            "recordings_once": bool(files.is_unique and len(files) == len(pd.read_csv(a / "file_summary.csv")))}


def ray_cli(*args: str, block: bool = False) -> subprocess.Popen | None:
    ray = str(Path(sys.executable).parent / "ray")
    if block:
        return subprocess.Popen([ray, *args, "--block"], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    subprocess.run([ray, *args], env=ENV, check=True, capture_output=True)
    return None


def part_cluster(model: Path, audio: Path, work: Path, single: Path, files: int) -> None:
    from ray.util import get_node_ip_address  # noqa: PLC0415

    address = f"{get_node_ip_address()}:{PORT}"  # this machine's own address (Ray maps 127.0.0.1 to it anyway)
    ray_cli("start", "--head", "--port", str(PORT), "--num-cpus", "1", "--include-dashboard", "false")
    try:
        node = ray_cli("start", "--address", address, "--num-cpus", "1", block=True)
        time.sleep(8)
        two = detect(model, audio, work / "two_nodes", ["--ray", address, "--ray-actors", "2"])
        emit({"part": "cluster", "nodes": 2, **two, **compare(single, work / "two_nodes")})
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()
        node = ray_cli("start", "--address", address, "--num-cpus", "1", block=True)
        time.sleep(8)

        def kill_node(out: Path) -> None:
            summary = out / "file_summary.csv"
            while not (summary.is_file() and len(summary.read_text().splitlines()) > files // 5):
                time.sleep(0.2)
            os.killpg(node.pid, signal.SIGKILL)
            emit({"part": "cluster", "event": "second node killed",
                  "recordings_done": len(summary.read_text().splitlines()) - 1})

        killed = detect(model, audio, work / "node_killed", ["--ray", address, "--ray-actors", "2"], kill=kill_node)
        emit({"part": "cluster", "nodes": "2, one killed mid-run", **killed, **compare(single, work / "node_killed")})
    finally:
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], env=ENV, capture_output=True)


def command_json(cmd: list[str]) -> dict[str, Any]:
    """A project command in a child process: its last JSON line and its wall time."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *cmd], env=ENV, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": round(time.perf_counter() - t0, 1)}


def part_embeddings(audio: Path, work: Path, files: int) -> None:
    """Row 5: the embedding database and the embedding table, one machine against a local Ray cluster."""
    from archive.database import open_archive, vectors, windows_frame  # noqa: PLC0415

    subset = work / "embed_audio"
    subset.mkdir(exist_ok=True)
    for path in sorted(audio.iterdir())[:files]:
        link = subset / path.name
        if not link.exists():
            link.symlink_to(path)
    hours = sum(sf_seconds(p) for p in subset.iterdir()) / 3600

    def database(folder: Path) -> tuple[pd.DataFrame, np.ndarray]:
        db = open_archive(folder, readonly=True)
        frame = windows_frame(db).sort_values(["file", "start_s"]).reset_index(drop=True)
        vecs = vectors(db, frame["window_id"].to_numpy())
        db.db.close()
        return frame[["file", "start_s", "end_s"]], vecs

    runs = {}
    for how, extra in (("one machine", []), ("ray auto (local cluster)", ["--ray", "auto"])):
        key = "ray" if extra else "single"
        shutil.rmtree(work / f"db_{key}", ignore_errors=True)
        runs[("archive.build", key)] = command_json(["archive.build", "--audio-dir", str(subset), "--db",
                                                      str(work / f"db_{key}"), *extra])
        for leftover in (work / f"emb_{key}.parquet", work / f"emb_{key}.parquet.parts"):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        runs[("inference.embed", key)] = command_json(["inference.embed", "--audio-dir", str(subset), "--out",
                                                        str(work / f"emb_{key}.parquet"), *extra])
    (fa, va), (fb, vb) = database(work / "db_single"), database(work / "db_ray")
    ta, tb = (pd.read_parquet(work / f"emb_{k}.parquet").sort_values(["file", "start_s"]).reset_index(drop=True)
              for k in ("single", "ray"))
    values = [c for c in ta.columns if c.startswith("e")]
    same = {"archive.build": {"same_windows": bool(fa.equals(fb)),
                              "max_vector_diff": float(np.abs(va - vb).max()) if fa.equals(fb) else None},
            "inference.embed": {"same_rows": bool(ta[["file", "start_s"]].equals(tb[["file", "start_s"]])),
                                "max_value_diff": float(np.abs(ta[values].to_numpy() - tb[values].to_numpy()).max())
                                if len(ta) == len(tb) else None}}
    for command in ("archive.build", "inference.embed"):
        single, ray = runs[(command, "single")], runs[(command, "ray")]
        emit({"part": "embeddings", "command": command, "files": files, "audio_hours": round(hours, 3),
              "single_wall_s": single["wall_s"], "ray_wall_s": ray["wall_s"],
              "single_audio_hours_per_hour": round(hours * 3600 / single["wall_s"], 1),
              "ray_audio_hours_per_hour": round(hours * 3600 / ray["wall_s"], 1),
              "ratio": round(single["wall_s"] / ray["wall_s"], 3), **same[command]})


def sf_seconds(path: Path) -> float:
    import soundfile as sf  # noqa: PLC0415

    return sf.info(str(path)).duration


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["cluster", "overhead", "memory", "embeddings"])
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--checkpoint")
    p.add_argument("--embed-files", type=int, default=40, help="recordings of the embeddings part")
    p.add_argument("--work", help="keep the generated audio and outputs here (default: a temporary folder)")
    args = p.parse_args()
    from benchmarks.inference import stand_in_checkpoint  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = Path(args.checkpoint) if args.checkpoint else stand_in_checkpoint(work / "model.pt")
        audio = work / "audio"
        if not audio.is_dir():
            recordings(audio, args.files, args.seconds)
        if args.parts == ["embeddings"]:
            part_embeddings(audio, work, args.embed_files)
            return
        single = detect(model, audio, work / "single")
        emit({"part": "single_machine", "files": args.files, "seconds_each": args.seconds, **single})
        if "cluster" in args.parts:
            part_cluster(model, audio, work, work / "single", args.files)
        if "overhead" in args.parts:
            ray = str(Path(sys.executable).parent / "ray")
            subprocess.run([ray, "stop", "--force"], env=ENV, capture_output=True)
            local = detect(model, audio, work / "one_node", ["--ray", "auto"])  # detect.py starts a local cluster
            ray_cli("start", "--head", "--num-cpus", str(os.cpu_count()), "--include-dashboard", "false")
            try:  # a one-node cluster already running (ray start --head), joined as any cluster is
                joined = detect(model, audio, work / "one_node_joined", ["--ray", "auto"])
            finally:
                subprocess.run([ray, "stop", "--force"], env=ENV, capture_output=True)
            for how, row, folder in (("local cluster started by detect.py", local, "one_node"),
                                     ("one-node cluster joined", joined, "one_node_joined")):
                emit({"part": "overhead", "ray": how, "single_windows_per_s": single["windows_per_s"],
                      "ray_windows_per_s": row["windows_per_s"],
                      "ratio": round(row["windows_per_s"] / single["windows_per_s"], 3),
                      **compare(work / "single", work / folder)})
            rtf = single["realtime_factor"]
            emit({"part": "projection", "node": f"{os.cpu_count()} cores (this machine)", "realtime_factor": rtf,
                  "hours_for_10000_audio_hours": round(10000 / rtf, 1),
                  "gpu_actor": "not measured (no GPU lent)"})
        if "memory" in args.parts:
            for count in (100, 1000):
                folder = work / f"memory_{count}"
                if not folder.is_dir():
                    short_recordings(folder, count)
                for engine, extra in (("single", []), ("ray", ["--ray", "auto"])):
                    row = detect(model, folder, work / f"memory_{count}_{engine}", extra)
                    emit({"part": "memory", "files": count, "engine": engine, "peak_rss_mb": row["peak_rss_mb"],
                          "ray_pss_mb": row["ray_pss_mb"], "windows_per_s": row["windows_per_s"]})
        if "embeddings" in args.parts:
            part_embeddings(audio, work, args.embed_files)


if __name__ == "__main__":
    main()
