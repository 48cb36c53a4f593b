"""Small synthetic datasets in the shape of each neighbouring job, to see a config work end to end offline.

    python -m dataloader.job_demos binary data/chainsaw_demo      # folder: chainsaw/ no_chainsaw/
    python -m dataloader.job_demos multiclass data/drone_car_speech_demo   # folder: drone/ car/ speech/
    python -m dataloader.job_demos events data/elephant_demo       # 20-s clips + labels.csv (+ Raven tables)
    python -m dataloader.job_demos tiny data/bird_detector_demo    # 8 kHz folder: bird/ not_bird/

The sounds are stand-ins with the acoustic shape of the real classes (a chainsaw's harmonic buzz, a rumble's
low-frequency tone, a gunshot's broadband impulse, chirps, noise), not recordings: they show the pipeline
working, not what a model of the real data would score.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

Sound = Callable[[np.random.Generator, int, int], np.ndarray]  # (rng, samples, sample_rate) -> float32


def _noise(rng: np.random.Generator, n: int, level: float = 0.02) -> np.ndarray:
    brown = np.cumsum(rng.standard_normal(n)) * 1e-3
    brown -= np.convolve(brown, np.ones(64) / 64, mode="same")
    return (level * rng.standard_normal(n) + brown).astype(np.float32)


def _harmonic_buzz(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A two-stroke engine: a sawtooth-like series of harmonics with a wobbling pitch (chainsaw, car)."""
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 160) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12) if k * f0.max() < sr / 2)
    return (0.3 * x).astype(np.float32)


def _rotor_whine(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A drone: a high tonal whine (blade-pass harmonics) with fast amplitude modulation."""
    t = np.arange(n) / sr
    f0 = rng.uniform(1500, 2500)
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3) if k * f0 < sr / 2)
    return (0.2 * x * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(80, 120) * t))).astype(np.float32)


def _speech_like(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Syllables: bursts of a glottal pulse train with a moving formant, separated by pauses."""
    t = np.arange(n) / sr
    pitch = rng.uniform(100, 220)
    carrier = np.sign(np.sin(2 * np.pi * pitch * t)) * np.sin(2 * np.pi * rng.uniform(500, 900) * t)
    envelope = (np.sin(2 * np.pi * rng.uniform(3, 5) * t) > 0.1).astype(np.float32)
    return (0.3 * carrier * envelope).astype(np.float32)


def _chirps(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Bird-like downward chirps at random times."""
    x = np.zeros(n, dtype=np.float32)
    length = int(0.12 * sr)
    hi = min(0.45 * sr, 6000.0)
    for _ in range(max(1, int(rng.integers(2, 6) * n / sr))):
        start = int(rng.integers(0, max(1, n - length)))
        f = np.linspace(hi, hi * 0.5, length)
        x[start:start + length] += 0.3 * np.sin(2 * np.pi * np.cumsum(f) / sr) * np.hanning(length)
    return x[:n]


def _write(path: Path, audio: np.ndarray, sr: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1, 1).astype(np.float32), sr, subtype="PCM_16")


def folder_dataset(root: Path, classes: dict[str, Sound], per_class: int, seconds: tuple[float, float], sr: int,
                   seed: int = 0) -> Path:
    """``root/<class>/<class>_<k>.wav``: each a class sound over background noise, of random length."""
    rng = np.random.default_rng(seed)
    for name, sound in classes.items():
        for k in range(per_class):
            n = int(rng.uniform(*seconds) * sr)
            _write(root / name / f"{name}_{k:03d}.wav", _noise(rng, n) + sound(rng, n, sr), sr)
    return root


def binary_dataset(root: Path, per_class: int = 300, seed: int = 0) -> Path:
    """Seed 000's shape: ``chainsaw/`` (fewer) and ``no_chainsaw/`` (more: background with birds), 16 kHz, 3 s,
    plus an empty file and two overlong recordings (what the duration filter and bad-input handling remove)."""
    folder_dataset(root, {"chainsaw": _harmonic_buzz}, max(4, per_class * 2 // 3), (2.8, 3.2), 16000, seed)
    folder_dataset(root, {"no_chainsaw": _chirps}, per_class, (2.8, 3.2), 16000, seed + 1)
    _write(root / "no_chainsaw" / "empty.wav", np.zeros(0, np.float32), 16000)
    rng = np.random.default_rng(seed + 2)
    for k in range(2):
        _write(root / "no_chainsaw" / f"overlong_{k}.wav", _noise(rng, 16000 * 40), 16000)
    return root


def multiclass_dataset(root: Path, per_class: int = 20, seed: int = 0) -> Path:
    """Seed 004's shape: ``drone/``, ``car/``, ``speech/`` recordings of 4-9 s (cut into 2-s chunks), 22.05 kHz."""
    return folder_dataset(root, {"drone": _rotor_whine, "car": _harmonic_buzz, "speech": _speech_like},
                          per_class, (4.0, 9.0), 22050, seed)


def tiny_dataset(root: Path, per_class: int = 150, seed: int = 0) -> Path:
    """Seed 002's shape: 8 kHz, ~1.5-s clips, ``bird/`` (chirps) vs ``not_bird/`` (noise, engine buzz)."""
    folder_dataset(root, {"bird": _chirps}, per_class, (1.2, 1.8), 8000, seed)
    return folder_dataset(root, {"not_bird": lambda r, n, sr: 0.5 * _harmonic_buzz(r, n, sr) * (r.random() < 0.5)},
                          per_class, (1.2, 1.8), 8000, seed + 1)


def events_dataset(root: Path, clips: int = 120, seconds: float = 20.0, sr: int = 8000, seed: int = 0) -> Path:
    """Seed 001's shape: 20-s clips with elephant-like rumbles (a 20-40 Hz tone with harmonics, 2-6 s) and
    gunshots (broadband impulses with a decay, 0.3 s) at random times, a quarter of the clips event-free
    (``background``), ``labels.csv`` (path,start,end,label, one row per event) and, for every fourth clip, a
    Raven selection table instead of rows."""
    rng = np.random.default_rng(seed)
    rows = ["path,start,end,label,raven"]
    n = int(seconds * sr)
    for k in range(clips):
        audio, events = _noise(rng, n, 0.01), []
        if k % 4 != 3:
            for _ in range(int(rng.integers(1, 3))):
                a = float(rng.uniform(0.5, seconds - 7))
                d = float(rng.uniform(2, 6))
                t = np.arange(int(d * sr)) / sr
                f0 = rng.uniform(20, 40)
                rumble = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in (1, 2, 3, 4)) * np.hanning(len(t))
                audio[int(a * sr):int(a * sr) + len(t)] += 0.4 * rumble
                events.append((round(a, 3), round(a + d, 3), "rumble"))
            if rng.random() < 0.6:
                a = float(rng.uniform(0.5, seconds - 1))
                m = int(0.3 * sr)
                shot = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.04 * sr))
                audio[int(a * sr):int(a * sr) + m] += 0.6 * shot
                events.append((round(a, 3), round(a + 0.3, 3), "gunshot"))
        name = f"clips/clip_{k:03d}.wav"
        _write(root / name, audio, sr)
        if not events:
            rows.append(f"{name},0,{seconds},background,")
        elif k % 4 == 2:  # annotated in Raven instead of in the table
            table = root / "raven" / f"clip_{k:03d}.Table.1.selections.txt"
            table.parent.mkdir(parents=True, exist_ok=True)
            lines = ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\t"
                     "Annotation"]
            lines += [f"{i + 1}\tSpectrogram 1\t1\t{a}\t{b}\t0\t{sr / 2}\t{lbl}" for i, (a, b, lbl) in enumerate(events)]
            table.write_text("\n".join(lines) + "\n")
            rows.append(f"{name},,,,raven/{table.name}")
        else:
            rows.extend(f"{name},{a},{b},{lbl}," for a, b, lbl in events)
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


JOBS = {"binary": binary_dataset, "multiclass": multiclass_dataset, "events": events_dataset, "tiny": tiny_dataset}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("job", choices=sorted(JOBS))
    p.add_argument("folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, help="recordings per class (clips for events); default: the job's own")
    args = p.parse_args(argv)
    size = () if args.size is None else (args.size,)
    print(JOBS[args.job](Path(args.folder), *size, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
