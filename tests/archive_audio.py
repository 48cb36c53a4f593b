"""Generated recordings for the archive tests: a few sites of noise with calls of distinct kinds, one kind
(a rising whistle) planted at a known time in one recording, and a separate clip of that whistle to search with."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 32000
PLANT = ("site_b/night_02.wav", 6.0)  # the recording and second where the whistle is planted


def whistle(seconds: float = 1.5, rng: np.random.Generator | None = None) -> np.ndarray:
    """A rising whistle (2 -> 5 kHz) with a little vibrato: the sound the search looks for."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * (2000 * t + 1000 * t ** 2 / seconds) + 0.8 * np.sin(2 * np.pi * 9 * t)
    env = np.sin(np.pi * t / seconds) ** 2
    return (0.5 * env * np.sin(phase)).astype(np.float32)


def chirps(seconds: float, freq: float, rng: np.random.Generator) -> np.ndarray:
    """Short downward chirps around ``freq`` at random times: another kind of call."""
    out = np.zeros(int(seconds * SR), dtype=np.float32)
    for start in rng.uniform(0, seconds - 0.3, size=int(seconds)):
        t = np.arange(int(0.15 * SR)) / SR
        call = 0.4 * np.sin(2 * np.pi * (freq * t - 2000 * t ** 2)) * np.hanning(t.size)
        a = int(start * SR)
        out[a:a + t.size] += call.astype(np.float32)
    return out


def make_archive(root: Path, seconds: float = 12.0, seed: int = 0) -> dict[str, Path]:
    """``root/site_a``, ``root/site_b``: recordings of noise with chirps, the whistle planted in one; plus a query
    clip of the whistle (outside the archive) and an unreadable file. Returns the notable paths."""
    rng = np.random.default_rng(seed)
    names = ["site_a/dawn_01.wav", "site_a/dawn_02.wav", "site_b/night_01.wav", "site_b/night_02.wav"]
    for k, name in enumerate(names):
        y = 0.02 * rng.standard_normal(int(seconds * SR)).astype(np.float32)
        y += chirps(seconds, 6000 + 1500 * k, rng)
        if name == PLANT[0]:
            a = int(PLANT[1] * SR)
            w = whistle(2.5, rng)
            y[a:a + w.size] += w
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, y, SR)
    broken = root / "site_b" / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    query = root.parent / "query_whistle.wav"
    q = 0.02 * rng.standard_normal(int(3.0 * SR)).astype(np.float32)
    w = whistle(2.5, rng)
    q[int(0.25 * SR):int(0.25 * SR) + w.size] += w
    sf.write(query, q, SR)
    return {"root": root, "query": query, "broken": broken}
