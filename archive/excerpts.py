"""What a person checks a window by: its audio (a WAV excerpt) and its mel spectrogram (a PNG), each with a
little context around the window."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dataloader.audio import MonoReader

PAD_S = 0.5  # seconds of context on each side of a window


def read_excerpt(path: str | Path, start_s: float, end_s: float, pad_s: float = PAD_S) -> tuple[np.ndarray, int]:
    """(samples, sample rate) of ``start_s - pad_s .. end_s + pad_s`` of a recording, at its own rate."""
    with MonoReader(path) as reader:
        sr = reader.samplerate
        a = int(max(0.0, start_s - pad_s) * sr)
        b = min(reader.length(), int((end_s + pad_s) * sr))
        return reader.read(a, max(a, b)), sr


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """A 16-bit PCM WAV file of ``samples``, in memory."""
    import soundfile as sf  # noqa: PLC0415

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def spectrogram_png(samples: np.ndarray, sample_rate: int, start_s: float, window: tuple[float, float],
                    title: str = "") -> bytes:
    """The dB mel spectrogram of an excerpt starting at ``start_s`` seconds of its recording, the window's span
    shaded, as PNG bytes (the pipeline's default mel settings, resampled to their rate)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from dataloader.audio import resample  # noqa: PLC0415
    from dataloader.mel import MelTransform  # noqa: PLC0415
    from utils.config_schema import DataProcessConfig  # noqa: PLC0415

    settings = DataProcessConfig()
    mel = MelTransform.from_config(settings)(resample(np.asarray(samples, dtype=np.float32), sample_rate,
                                                      settings.sample_rate))
    seconds = len(samples) / sample_rate
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma",
              extent=(start_s, start_s + seconds, 0, mel.shape[0]))
    ax.axvspan(window[0], window[1], color="cyan", alpha=0.12)
    ax.set_xlabel("s", fontsize=8)
    ax.set_ylabel(f"mel band ({settings.f_min:g}-{settings.f_max:g} Hz)", fontsize=8)
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
