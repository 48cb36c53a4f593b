"""Preprocessing benchmark: the project's cache builder against the unavoidable work and the seed's approach.

    python benchmarks/preprocess.py [--hours 1.0] [--workers 2] [--corpus /tmp/bench_corpus]

Generates (once, reused) a corpus of 32 kHz OGG Vorbis files of mixed length (1 s to 10 min) adding up to
``--hours`` of audio, then measures in the same run, printing one JSON line per figure:

- ``pipeline_audio_s_per_s``: ``build_cache`` with ``--workers`` processes into an empty cache, then the
  per-frequency statistics from the cached mels (``fit_standardizer``), median of ``--repeats`` runs;
- ``decode_only_audio_s_per_s`` / ``frontend_only_audio_s_per_s``: decoding alone, and the front end alone on
  already-decoded audio, over the same files with the same workers; ``bound_audio_s_per_s`` = 1 / (1/decode +
  1/frontend), the unavoidable work, and ``ratio_to_bound`` = pipeline / bound (median over pairs measured
  back to back, since this machine's speed drifts by ±10 % over seconds);
- ``naive_audio_s_per_s``: the seed's approach (transforms rebuilt per file, per-segment float32 3-channel
  ``.npy``, one process, one core) on the same files, and ``speedup_vs_naive``; the same with torch's two
  intra-op threads as ``naive_2threads_audio_s_per_s`` / ``speedup_vs_naive_2threads``;
- ``frontend_vs_torchaudio``: the front end against torchaudio's MelSpectrogram + AmplitudeToDB, same settings;
- peak RSS, cache bytes per audio hour, and the cache-hit re-run time as a share of the first run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataloader.audio import load_audio  # noqa: E402
from dataloader.demo_sounds import write_ogg  # noqa: E402
from dataloader.mel import MelTransform  # noqa: E402
from dataloader.preprocess import build_cache, fit_standardizer  # noqa: E402
from dataloader.worker_pool import pool_context  # noqa: E402
from training.config import DataProcessConfig  # noqa: E402


def emit(**figures: object) -> None:
    print(json.dumps(figures), flush=True)


def make_corpus(folder: Path, hours: float, seed: int = 0) -> list[Path]:
    """Files of 1 s to 10 min (log-uniform) of tones in noise until ``hours`` of audio; reused when present."""
    marker = folder / f"complete-{hours}.json"
    if marker.is_file():
        return [folder / name for name in json.loads(marker.read_text())]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names, total = [], 0.0
    while total < hours * 3600:
        seconds = float(np.exp(rng.uniform(np.log(1.0), np.log(600.0))))
        n = int(seconds * 32000)
        t = np.arange(n, dtype=np.float32) / 32000
        audio = 0.05 * rng.standard_normal(n).astype(np.float32) + 0.2 * np.sin(2 * np.pi * rng.uniform(500, 8000) * t)
        name = f"f{len(names):04d}.ogg"
        write_ogg(folder / name, audio.astype(np.float32))
        names.append(name)
        total += seconds
    marker.write_text(json.dumps(names))
    return [folder / name for name in names]


def _stage_times(path: str) -> tuple[float, float, float]:
    """(audio seconds, decode seconds, front-end seconds) for one file, in a worker."""
    fe = _stage_times.frontend  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    audio = load_audio(path, 32000)
    t1 = time.perf_counter()
    fe(audio)
    return audio.size / 32000, t1 - t0, time.perf_counter() - t1


def _init_stage_worker() -> None:
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    threadpool_limits(1)
    _stage_times.frontend = MelTransform.from_config(DataProcessConfig())  # type: ignore[attr-defined]


def stage_throughputs(files: list[Path], workers: int) -> tuple[float, float]:
    """Audio seconds per wall second of decoding alone and of the front end alone, with ``workers`` processes
    started the way the cache builder starts them."""
    with ProcessPoolExecutor(workers, mp_context=pool_context(), initializer=_init_stage_worker) as pool:
        rows = list(pool.map(_stage_times, [str(f) for f in files], chunksize=2))
    audio = sum(r[0] for r in rows)
    return audio / (sum(r[1] for r in rows) / workers), audio / (sum(r[2] for r in rows) / workers)


def naive(files: list[Path], out: Path, threads: int) -> float:
    """The seed's approach, one process: new transforms per file, 5-s segments saved as float32 3-channel,
    torch using ``threads`` intra-op threads."""
    import torch  # noqa: PLC0415
    import torchaudio  # noqa: PLC0415

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    dp = DataProcessConfig()
    out.mkdir(parents=True, exist_ok=True)
    t0, audio_s = time.perf_counter(), 0.0
    for k, path in enumerate(files):
        mel_tf = torchaudio.transforms.MelSpectrogram(dp.sample_rate, n_fft=dp.n_fft, hop_length=dp.hop_length,
                                                      n_mels=dp.n_mels, f_min=dp.f_min, f_max=dp.f_max)
        to_db = torchaudio.transforms.AmplitudeToDB(top_db=80)
        audio, sr = sf.read(str(path), dtype="float32")
        audio_s += len(audio) / sr
        seg = 5 * sr
        for i in range(0, max(1, len(audio)), seg):
            piece = torch.from_numpy(np.pad(audio[i:i + seg], (0, max(0, seg - len(audio[i:i + seg])))))
            mel = to_db(mel_tf(piece))
            mel = (mel - mel.mean(dim=1, keepdim=True)) / (mel.std(dim=1, keepdim=True) + 1e-6)
            np.save(out / f"{k}_{i // seg}.npy", mel.unsqueeze(0).repeat(3, 1, 1).numpy().astype(np.float32))
    torch.set_num_threads(before)
    return audio_s / (time.perf_counter() - t0)


def frontend_vs_torchaudio(files: list[Path]) -> float:
    """Speed of the project's front end over torchaudio MelSpectrogram + AmplitudeToDB, same settings, one thread."""
    import torch  # noqa: PLC0415
    import torchaudio  # noqa: PLC0415

    torch.set_num_threads(1)
    dp = DataProcessConfig()
    fe = MelTransform.from_config(dp)
    ta = torchaudio.transforms.MelSpectrogram(dp.sample_rate, n_fft=dp.n_fft, hop_length=dp.hop_length,
                                              n_mels=dp.n_mels, f_min=dp.f_min, f_max=dp.f_max, norm="slaney",
                                              mel_scale="slaney")
    to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)
    audios = [load_audio(f, 32000) for f in files]
    timings = {}
    for name, fn in (("project", fe), ("torchaudio", lambda a: to_db(ta(torch.from_numpy(a))).numpy())):
        t0 = time.perf_counter()
        for a in audios:
            fn(a)
        timings[name] = time.perf_counter() - t0
    return timings["torchaudio"] / timings["project"]


def long_file(folder: Path, hours: float) -> dict[str, object]:
    """Peak RSS and speed of a fresh process caching one long 44.1 kHz stereo FLAC (decoded, resampled to
    32 kHz and transformed block by block)."""
    path = folder / "long.flac"
    rng = np.random.default_rng(1)
    with sf.SoundFile(path, "w", 44100, 2, subtype="PCM_16") as f:
        for _ in range(int(hours * 60)):  # one minute at a time
            f.write((0.1 * rng.standard_normal((44100 * 60, 2))).astype(np.float32))
    code = (f"import sys, time, resource, pandas as pd; sys.path.insert(0, {str(ROOT)!r});"
            "from dataloader.preprocess import build_cache; from training.config import DataProcessConfig;"
            f"t0 = time.perf_counter(); build_cache(pd.DataFrame({{'path': [{str(path)!r}]}}), DataProcessConfig(),"
            f" {str(folder / 'long_cache')!r}, workers=1);"
            "print(time.perf_counter() - t0, [int(line.split()[1]) // 1024 for line in open('/proc/self/status')"
            " if line.startswith('VmHWM')][0])")  # ru_maxrss would count the forked parent from before exec
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    path.unlink()
    return {"long_file_h": hours, "long_file_format": "flac 44.1 kHz stereo", "long_file_s": round(float(out[0]), 1),
            "long_file_audio_s_per_s": round(hours * 3600 / float(out[0]), 1), "long_file_peak_rss_mb": int(out[1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="pairs of pipeline and stage-bound runs (medians)")
    p.add_argument("--long-file-h", type=float, default=1.0, help="hours of one 44.1 kHz stereo FLAC processed "
                   "alone in a fresh process, to show block-wise memory (0: skip)")
    p.add_argument("--corpus", default=str(Path(tempfile.gettempdir()) / "birdclef_bench_corpus"))
    args = p.parse_args()
    files = make_corpus(Path(args.corpus), args.hours)
    audio_s = sum(sf.info(str(f)).duration for f in files)
    emit(corpus_files=len(files), corpus_audio_h=round(audio_s / 3600, 3))
    table = pd.DataFrame({"path": [str(f) for f in files], "primary_label": "x", "secondary_labels": [[]] * len(files),
                          "group": [f.stem for f in files], "filename": [f.name for f in files]})
    with tempfile.TemporaryDirectory() as tmp:
        times, bounds, stages = [], [], []
        for k in range(args.repeats):  # pipeline and bound measured in pairs: this machine's speed drifts
            t0 = time.perf_counter()
            result = build_cache(table, DataProcessConfig(), Path(tmp) / f"cache{k}", workers=args.workers)
            fit_standardizer(result.table, DataProcessConfig(), result.folder)  # the statistics are part of the job
            times.append(time.perf_counter() - t0)
            stages.append(stage_throughputs(files, args.workers))
            bounds.append(1 / (1 / stages[-1][0] + 1 / stages[-1][1]))
        first = statistics.median(times)
        t0 = time.perf_counter()
        again = build_cache(table, DataProcessConfig(), Path(tmp) / f"cache{args.repeats - 1}", workers=args.workers)
        rerun = time.perf_counter() - t0
        cache_bytes = sum(Path(e).stat().st_size for e in result.table["entry"])
        pipeline = audio_s / first
        emit(pipeline_audio_s_per_s=round(pipeline, 1), first_run_s=round(first, 2),
             first_run_s_all=[round(t, 2) for t in times], rerun_s=round(rerun, 3),
             rerun_share=round(rerun / first, 4), rerun_decoded=again.decoded,
             cache_bytes_per_audio_h=int(cache_bytes / (audio_s / 3600)),
             peak_rss_parent_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
             peak_rss_worker_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
        decode, frontend = (statistics.median(x) for x in zip(*stages))
        ratios = [audio_s / t / b for t, b in zip(times, bounds)]
        emit(decode_only_audio_s_per_s=round(decode, 1), frontend_only_audio_s_per_s=round(frontend, 1),
             bound_audio_s_per_s=round(statistics.median(bounds), 1), ratio_to_bound=round(statistics.median(ratios), 3),
             ratio_to_bound_all=[round(r, 3) for r in ratios])
        for threads in (1, 2):  # one core, as the seed's loop ran; and torch's default on this machine
            speed = naive(files, Path(tmp) / f"naive{threads}", threads)
            suffix = "" if threads == 1 else f"_{threads}threads"
            emit(**{f"naive{suffix}_audio_s_per_s": round(speed, 1), f"speedup_vs_naive{suffix}": round(pipeline / speed, 2)})
            shutil.rmtree(Path(tmp) / f"naive{threads}")
        if args.long_file_h > 0:
            emit(**long_file(Path(tmp), args.long_file_h))
    emit(frontend_vs_torchaudio=round(frontend_vs_torchaudio(files[:20]), 3))
    emit(settings=dataclasses.asdict(DataProcessConfig()))


if __name__ == "__main__":
    main()
