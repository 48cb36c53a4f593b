"""What the embedded demo's species sound like, and the recordings and soundscapes made of them.

Each species (:class:`Species`) calls a phrase of tonal or noisy notes (band, FM shape, rhythm, harmonics);
:func:`write_recording` writes one focal recording (the primary species, maybe a quieter secondary one, a
background), :func:`write_soundscape` one soundscape (several species in bouts, distance-filtered, rain and insect
backgrounds) and returns which species call in each 5-s window. Every file has its own seed: the same audio
whatever process writes it. :mod:`dataloader.demo` lays the files out as a BirdCLEF edition.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.fft
import soundfile as sf

SAMPLE_RATE = 32000
_OGG_BLOCK = 30 * SAMPLE_RATE  # libsndfile 1.2.2 segfaults writing >= ~90 s of Vorbis in one call


@dataclass(frozen=True)
class Species:
    """How one synthetic species calls: a phrase of tonal (or noisy) notes repeated with gaps."""

    code: str
    common_name: str
    shape: str  # tone | sweep | chevron | vibrato | noise
    f0: float  # start (or centre) frequency, Hz
    f1: float  # end (or peak / upper band edge) frequency, Hz
    note_s: float
    notes: int
    note_gap_s: float
    phrase_gap_s: tuple[float, float]
    harmonics: tuple[float, ...] = (1.0,)
    am_hz: float = 0.0  # trill: amplitude modulation rate
    step: float = 1.0  # frequency ratio from one note to the next


SPECIES: tuple[Species, ...] = (
    Species("risewh", "Rising Whistler", "sweep", 2500, 4500, 0.35, 1, 0.0, (0.8, 2.0)),
    Species("fallwh", "Falling Whistler", "sweep", 4500, 2500, 0.35, 1, 0.0, (0.8, 2.0)),
    Species("monpip", "Monotone Piper", "tone", 3500, 3500, 0.12, 4, 0.10, (1.0, 2.5)),
    Species("siltri", "Silver Triller", "tone", 6000, 6000, 1.2, 1, 0.0, (1.0, 3.0), am_hz=28.0),
    Species("vibwar", "Vibrato Warbler", "vibrato", 6000, 600, 0.8, 1, 0.0, (1.0, 3.0)),
    Species("harhoo", "Harmonic Hooter", "tone", 700, 700, 0.5, 2, 0.35, (1.5, 3.5), harmonics=(1.0, 0.7, 0.5, 0.35)),
    Species("lowowl", "Low Owlet", "tone", 620, 620, 0.6, 3, 0.45, (2.0, 4.0)),
    Species("buzpri", "Buzzing Prinia", "noise", 7000, 9000, 0.6, 2, 0.25, (1.0, 2.5)),
    Species("chevch", "Chevron Chat", "chevron", 3000, 5000, 0.25, 3, 0.12, (1.0, 2.5)),
    Species("clidro", "Clicking Drongo", "noise", 2000, 10000, 0.006, 10, 0.025, (0.8, 2.0)),
    Species("higswi", "High Swiftlet", "sweep", 10000, 8000, 0.09, 6, 0.05, (0.8, 2.0)),
    Species("doubar", "Double-note Barbet", "tone", 1500, 1500, 0.14, 2, 0.18, (0.6, 1.5), step=0.8,
            harmonics=(1.0, 0.3)),
)
# Heard only in soundscapes (the 2026 demo's classes without focal recordings): an insect sonotype, a frog.
SOUNDSCAPE_ONLY: tuple[Species, ...] = (
    Species("sonins", "Sonotype Insect 01", "noise", 4200, 5200, 0.9, 3, 0.15, (0.5, 1.5), am_hz=45.0),
    Species("pulfro", "Pulsing Treefrog", "tone", 1100, 1100, 0.03, 8, 0.04, (1.0, 2.5), harmonics=(1.0, 0.5, 0.25)),
)
def _noise_spectrum(n: int, rng: np.random.Generator, sr: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(spectrum, its frequencies, length) of white noise at least ``n`` samples long: the next length the FFT
    does fast (a recording's own length can be a large prime, 20x slower), cut back to ``n`` after filtering."""
    m = scipy.fft.next_fast_len(n, real=True)
    return scipy.fft.rfft(rng.standard_normal(m)), np.fft.rfftfreq(m, 1 / sr), m


def _filtered(spec: np.ndarray, m: int, n: int) -> np.ndarray:
    """The first ``n`` samples of the noise of ``spec`` (length ``m``), at unit RMS."""
    out = scipy.fft.irfft(spec, m)[:n]
    return out / (np.sqrt(np.mean(out ** 2)) + 1e-12)


def _bandpass_noise(n: int, lo: float, hi: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    spec, freqs, m = _noise_spectrum(n, rng, sr)
    spec[(freqs < lo) | (freqs > hi)] = 0
    return _filtered(spec, m, n)


def _envelope(n: int) -> np.ndarray:
    ramp = max(1, int(n * 0.2))
    env = np.ones(n)
    env[:ramp] = np.sin(np.linspace(0, np.pi / 2, ramp)) ** 2
    env[n - ramp:] = env[:ramp][::-1]
    return env


def _note(sp: Species, scale: float, dur_scale: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    n = max(8, int(sp.note_s * dur_scale * sr))
    t = np.arange(n) / sr
    u = t / t[-1] if n > 1 else t
    if sp.shape == "noise":
        return _bandpass_noise(n, sp.f0 * scale, sp.f1 * scale, rng, sr) * _envelope(n) * 0.5
    if sp.shape == "sweep":
        freq = sp.f0 + (sp.f1 - sp.f0) * u
    elif sp.shape == "chevron":
        freq = sp.f0 + (sp.f1 - sp.f0) * (1 - np.abs(2 * u - 1))
    elif sp.shape == "vibrato":
        freq = sp.f0 + sp.f1 * np.sin(2 * np.pi * 8.0 * t)
    else:
        freq = np.full(n, float(sp.f0))
    phase = 2 * np.pi * np.cumsum(freq * scale) / sr + rng.uniform(0, 2 * np.pi)
    wave = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(sp.harmonics)
               if (k + 1) * max(sp.f0, sp.f1) * scale < sr / 2)
    if sp.am_hz:
        wave = wave * (0.5 + 0.5 * np.sin(2 * np.pi * sp.am_hz * t))
    return wave * _envelope(n)


def synth_phrase(sp: Species, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One phrase of ``sp`` with natural jitter in pitch (±4%) and tempo (±10%)."""
    scale = rng.uniform(0.96, 1.04)
    tempo = rng.uniform(0.9, 1.1)
    parts = []
    for i in range(sp.notes):
        parts.append(_note(sp, scale * sp.step ** i, tempo, rng, sr))
        if i < sp.notes - 1:
            parts.append(np.zeros(int(sp.note_gap_s * tempo * sr)))
    return np.concatenate(parts)


def _colored_noise(n: int, exponent: float, rng: np.random.Generator, sr: int) -> np.ndarray:
    spec, freqs, m = _noise_spectrum(n, rng, sr)
    spec *= 1 / np.maximum(freqs, 20.0) ** (exponent / 2)
    return _filtered(spec, m, n)


def _background(n: int, rng: np.random.Generator, sr: int, soundscape: bool) -> np.ndarray:
    """Pink/brown noise, plus insects, hum or (soundscapes) rain and stronger insect choruses."""
    bg = _colored_noise(n, rng.uniform(0.8, 2.0), rng, sr)
    if rng.random() < (0.8 if soundscape else 0.5):
        centre = rng.uniform(3500, 8500)
        insects = _bandpass_noise(n, centre - 300, centre + 300, rng, sr)
        slow = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * np.arange(n) / sr)
        bg += insects * slow * rng.uniform(0.2, 0.8 if soundscape else 0.6)
    if rng.random() < 0.3:
        bg += 0.5 * np.sin(2 * np.pi * rng.uniform(50, 180) * np.arange(n) / sr)
    if rng.random() < (0.5 if soundscape else 0.15):
        drops = np.zeros(n)
        idx = rng.integers(0, n, size=int(n / sr * rng.uniform(20, 80)))
        drops[idx] = rng.standard_normal(idx.size) * 8
        bg += np.convolve(drops, np.exp(-np.arange(64) / 8.0), mode="same")
    return bg / (np.sqrt(np.mean(bg ** 2)) + 1e-12)


def _distance_filter(x: np.ndarray, cutoff: float, sr: int) -> np.ndarray:
    """Air absorption: a gentle first-order high-frequency roll-off above ``cutoff``."""
    m = scipy.fft.next_fast_len(x.size, real=True)  # zero-padded to a fast length: the same filter, fast
    freqs = np.fft.rfftfreq(m, 1 / sr)
    return scipy.fft.irfft(scipy.fft.rfft(x, m) / np.sqrt(1 + (freqs / cutoff) ** 2), m)[:x.size]


def _place_calls(track: np.ndarray, sp: Species, start_s: float, end_s: float, rng: np.random.Generator,
                 sr: int, level: tuple[float, float], cutoff: Optional[float] = None) -> list[tuple[float, float]]:
    """Add phrases of ``sp`` between ``start_s`` and ``end_s``; return the (onset, offset) of each."""
    events = []
    t = start_s
    while t < end_s:
        phrase = synth_phrase(sp, rng, sr) * rng.uniform(*level)
        if cutoff:
            phrase = _distance_filter(phrase, cutoff, sr)
        i0 = int(t * sr)
        i1 = min(track.size, i0 + phrase.size)
        if i1 <= i0:
            break
        track[i0:i1] += phrase[: i1 - i0]
        events.append((t, i1 / sr))
        t = i1 / sr + rng.uniform(*sp.phrase_gap_s)
    return events


def _mix(signal: np.ndarray, background: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    active = np.abs(signal) > 1e-4
    p_sig = np.mean(signal[active] ** 2) if active.any() else 1.0
    audio = signal + background * np.sqrt(p_sig / 10 ** (snr_db / 10))
    return (audio / (np.max(np.abs(audio)) + 1e-12) * rng.uniform(0.3, 0.9)).astype(np.float32)


def write_ogg(path: Path, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write mono OGG Vorbis in blocks (one long write crashes libsndfile), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with sf.SoundFile(tmp, "w", samplerate=sr, channels=1, format="OGG", subtype="VORBIS") as f:
        for i in range(0, max(1, audio.size), _OGG_BLOCK):
            f.write(audio[i:i + _OGG_BLOCK])
    tmp.replace(path)


def write_recording(args: tuple) -> None:
    """Write one focal recording: ``(path, primary species index, secondary index or None, seconds, seed)``."""
    path, primary, secondary, length_s, seed = args
    rng = np.random.default_rng(seed)
    n = int(length_s * SAMPLE_RATE)
    sig = np.zeros(n)
    _place_calls(sig, SPECIES[primary], rng.uniform(0, 0.3), length_s, rng, SAMPLE_RATE, (0.5, 1.0))
    if secondary is not None:
        level = 10 ** (-rng.uniform(6, 14) / 20)
        _place_calls(sig, SPECIES[secondary], rng.uniform(0, length_s / 2), length_s, rng, SAMPLE_RATE,
                     (0.5 * level, level))
    bg = _background(n, rng, SAMPLE_RATE, soundscape=False)
    write_ogg(Path(path), _mix(sig, bg, rng.uniform(3, 25), rng))


def window_labels(events: dict[int, list[tuple[float, float]]], length_s: float, n_species: int,
                  window_s: float = 5.0, min_overlap_s: float = 0.1) -> np.ndarray:
    """(n_windows, n_species) 0/1: a species calls in a window when a phrase overlaps it by min_overlap_s."""
    n_windows = max(1, math.ceil((length_s - 0.1) / window_s))
    out = np.zeros((n_windows, n_species), dtype=np.int8)
    for sp, spans in events.items():
        for on, off in spans:
            for w in range(int(on // window_s), min(n_windows, int(off // window_s) + 1)):
                overlap = min(off, (w + 1) * window_s) - max(on, w * window_s)
                if overlap >= min(min_overlap_s, (off - on) * 0.5):
                    out[w, sp] = 1
    return out


def write_soundscape(args: tuple) -> np.ndarray:
    """Write one soundscape; returns its per-window labels over ``species``. The species of ``boost`` (heard only
    in soundscapes) join most soundscapes, so they can be learnt from the labelled ones."""
    path, length_s, seed, species, boost = args
    rng = np.random.default_rng(seed)
    n = int(length_s * SAMPLE_RATE)
    sig = np.zeros(n)
    events: dict[int, list[tuple[float, float]]] = {}
    chosen = [int(sp) for sp in rng.choice(len(SPECIES), size=rng.integers(3, 8), replace=False)]
    chosen += [b for b in boost if rng.random() < 0.7]
    for sp in chosen:
        for _ in range(rng.integers(1, 4)):  # bouts: clustered calling leaves other windows empty
            start = rng.uniform(0, length_s)
            bout = rng.uniform(2, 20)
            level = 10 ** (-rng.uniform(0, 9) / 20)
            events.setdefault(sp, []).extend(_place_calls(
                sig, species[sp], start, min(length_s, start + bout), rng, SAMPLE_RATE, (0.5 * level, level),
                cutoff=rng.uniform(4000, 12000)))
    bg = _background(n, rng, SAMPLE_RATE, soundscape=True)
    write_ogg(Path(path), _mix(sig, bg, rng.uniform(3, 15), rng))
    return window_labels(events, length_s, len(species))
