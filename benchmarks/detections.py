"""Detection throughput and memory, printed as JSON lines (ratios against baselines of the same run).

    python benchmarks/detections.py [--checkpoint CKPT] [--long-files 4] [--short-files 1000] [--hours 2]

Without ``--checkpoint`` an efficientnet_b0 with random weights and 182 classes stands in (speed does not depend on
the weights). Rows:

1. ``hop``: ``detect.py``'s scoring (at its batch size) of ``--long-files`` generated 4-minute soundscapes with a
   hop of 5 s and of 1 s: windows/s and the audio real-time factor (the mel is computed once per file whatever
   the hop, so a hop of 1 s costs about 5x the model work, not 5x the decoding);
2. ``short_files``: ``--short-files`` recordings of 5-10 s against the long soundscapes (hop 5 s):
   ``ratio`` of windows/s (target >= 0.8: windows of consecutive files share model calls);
3. ``long_recording``: one ``--hours``-hour recording through ``detect.py`` in a child process, with the checkpoint
   (torch) and with its ONNX export (no torch imported): peak RSS (target < 1 GB for 2 hours) beside the same
   process's peak on one 5-10 s recording (what the length adds), and the real-time factor.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SR = 32000


def emit(row: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(row), flush=True)
    return row


def short_recordings(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` WAV recordings of 5-10 s: noise with a chirp now and then."""
    import soundfile as sf  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(count):
        n = int(rng.uniform(5.0, 10.0) * SR)
        t = np.arange(n, dtype=np.float32) / SR
        x = 0.02 * rng.standard_normal(n).astype(np.float32) + 0.1 * np.sin(2 * np.pi * 3000 * t) * (t % 2 < 0.3)
        sf.write(folder / f"rec_{k:04d}.wav", x.astype(np.float32), SR, subtype="PCM_16")
    return folder


def long_recording(path: Path, hours: float, seed: int = 0) -> Path:
    """One ``hours``-hour 16-bit WAV, written a minute at a time."""
    import soundfile as sf  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as out:
        for _ in range(int(hours * 60)):
            out.write((0.03 * rng.standard_normal(60 * SR)).astype(np.float32))
    return path


def scoring_speed(checkpoint: Path, folder: Path, hop_s: float, repeats: int = 2) -> dict[str, float]:
    """Windows/s and real-time factor of scoring every recording of ``folder`` (best of ``repeats`` passes)."""
    from detect import DETECT_BATCH  # noqa: PLC0415
    from dataloader.audio import audio_tree  # noqa: PLC0415
    from inference.detections import score_folder  # noqa: PLC0415
    from inference.predict import SoundscapePredictor  # noqa: PLC0415

    predictor = SoundscapePredictor([checkpoint], batch_size=DETECT_BATCH)
    files = audio_tree(folder)
    best: dict[str, float] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = list(score_folder(predictor, files, hop_s, decode_threads=1, progress=False))
        seconds = time.perf_counter() - t0
        windows, audio = sum(r.windows for r in results), sum(r.duration_s for r in results)
        if windows / seconds > best.get("windows_per_s", 0):
            best = {"files": len(files), "windows": windows, "audio_s": round(audio, 1),
                    "windows_per_s": round(windows / seconds, 1), "realtime_factor": round(audio / seconds, 1)}
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--long-files", type=int, default=4)
    p.add_argument("--short-files", type=int, default=1000)
    p.add_argument("--hours", type=float, default=2.0)
    args = p.parse_args()
    from benchmarks.inference import stand_in_checkpoint  # noqa: PLC0415
    from inference.budget import generate_soundscapes  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.checkpoint) if args.checkpoint else stand_in_checkpoint(tmp / "m.pt")
        long_dir = generate_soundscapes(tmp / "long", args.long_files)
        five = scoring_speed(ckpt, long_dir, 5.0)
        one = scoring_speed(ckpt, long_dir, 1.0)
        emit({"what": "hop", "hop_s": 5.0, **five})
        emit({"what": "hop", "hop_s": 1.0, **one, "windows_ratio_to_hop_5": round(one["windows"] / five["windows"], 2),
              "seconds_ratio_to_hop_5": round((one["windows"] / one["windows_per_s"]) /
                                              (five["windows"] / five["windows_per_s"]), 2)})
        short = scoring_speed(ckpt, short_recordings(tmp / "short", args.short_files), 5.0, repeats=1)
        emit({"what": "short_files", **short, "long_windows_per_s": five["windows_per_s"],
              "ratio": round(short["windows_per_s"] / five["windows_per_s"], 3)})
        (tmp / "one_long").mkdir()
        (tmp / "one_short").mkdir()
        long_recording(tmp / "one_long" / "long_recording.wav", args.hours)
        short_recordings(tmp / "one_short", 1)
        from inference.export import export  # noqa: PLC0415

        onnx = Path(next(r["path"] for r in export(ckpt, tmp / "exported") if r["format"] == "onnx"))
        for model, backend in ((ckpt, "torch"), (onnx, "onnxruntime")):
            short = detect_run(model, tmp / "one_short", tmp / "short_out")
            long = detect_run(model, tmp / "one_long", tmp / "long_out")
            emit({"what": "long_recording", "backend": backend, "hours": args.hours, "seconds": long["seconds"],
                  "realtime_factor": long["realtime_factor"], "peak_rss_mb": long["peak_rss_mb"],
                  "peak_rss_mb_short_recording": short["peak_rss_mb"], "under_1_gb": long["peak_rss_mb"] < 1024})


def detect_run(model: Path, audio: Path, out: Path) -> dict[str, Any]:
    """``detect.py`` over ``audio`` in its own process (its peak memory its own); its summary line."""
    done = subprocess.run([sys.executable, str(ROOT / "detect.py"), "--checkpoint", str(model), "--audio-dir",
                           str(audio), "--out-dir", str(out), "--decode-threads", "1"],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])

if __name__ == "__main__":
    main()
