"""Recordings for the legacy-checkpoint test, the same bytes on every machine: noise with chirps, written as
16-bit WAV (lossless, so the stored reference rows do not depend on an encoder's version)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SECONDS = {"soundscape_a": 23.0, "soundscape_b": 61.0, "short_c": 3.0}


def write_legacy_audio(folder: Path, sample_rate: int = 32000) -> Path:
    """Three recordings (23 s, 61 s and 3 s) under ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2023)
    for name, seconds in SECONDS.items():
        n = int(seconds * sample_rate)
        t = np.arange(n) / sample_rate
        audio = 0.02 * rng.standard_normal(n)
        for start in rng.uniform(0, max(seconds - 1, 0.5), size=int(seconds // 2)):
            f0 = rng.uniform(1500, 7000)
            span = (t >= start) & (t < start + 0.4)
            audio[span] += 0.3 * np.sin(2 * np.pi * (f0 + 2000 * (t[span] - start)) * (t[span] - start))
        sf.write(folder / f"{name}.wav", np.clip(audio, -1, 1).astype(np.float32), sample_rate, subtype="PCM_16")
    return folder
