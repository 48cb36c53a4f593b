"""A quick look at what the model heard: for each class, its top detections as mel spectrograms on one page."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from dataloader.audio import AudioError, MemoryReader, MonoReader
from dataloader.features import FrontEnd

log = logging.getLogger(__name__)


def detection_mel(frontend: FrontEnd, path: Path, start_s: float, end_s: float, pad_s: float = 0.5) -> np.ndarray:
    """The dB mel (rows, frames) of ``start_s - pad_s`` .. ``end_s + pad_s`` of a recording, decoded alone."""
    with MonoReader(path) as reader:
        sr = reader.samplerate
        a = max(0, int((start_s - pad_s) * sr))
        samples = reader.read(a, int((end_s + pad_s) * sr))
    features, _ = frontend.features_from(MemoryReader(samples, sr, path))
    return np.asarray(features, dtype=np.float32)


def review_sheets(detections: pd.DataFrame, audio_root: Path, frontend: FrontEnd, out_dir: Path, top: int = 12,
                  columns: int = 4) -> list[Path]:
    """One PNG per class under ``out_dir``: its ``top`` detections by max score, each as the mel of the detection
    (±0.5 s) titled with file, time and score, so a person can check them at a glance; returns the pages."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    pages = []
    for cls, group in detections.groupby("class", sort=True):
        best = group.sort_values("max_score", ascending=False).head(top)
        rows = math.ceil(len(best) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False)
        for ax, (_, d) in zip(axes.flat, best.iterrows()):
            mel: Optional[np.ndarray] = None
            try:
                mel = detection_mel(frontend, audio_root / d["file"], d["start_s"], d["end_s"])
            except (AudioError, OSError, RuntimeError) as exc:
                log.warning("review sheet: %s: %s", d["file"], exc)
            if mel is not None and mel.size:
                extent = (max(d["start_s"] - 0.5, 0.0), max(d["start_s"] - 0.5, 0.0) + mel.shape[1] /
                          frontend.frames_per_second, 0, mel.shape[0])
                ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=extent)
                ax.axvspan(d["start_s"], d["end_s"], color="cyan", alpha=0.12)
            ax.set_title(f"{Path(d['file']).name}  {d['start_s']:.1f}-{d['end_s']:.1f} s\nscore {d['max_score']:.3f}",
                         fontsize=8)
            ax.set_xlabel("s", fontsize=7)
            ax.set_yticks([])
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(best):]:
            ax.axis("off")
        fig.suptitle(f"{cls}: top {len(best)} of {len(group)} detections", fontsize=11)
        fig.tight_layout()
        page = out_dir / f"{_safe(str(cls))}.png"
        fig.savefig(page, dpi=90)
        plt.close(fig)
        pages.append(page)
    return pages


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "class"
