"""Mixed views of a few training clips, for a teacher to label (consistent teaching when the pool is small).

    python -m dataloader.mixed_views --clips runs/<id>/split/train.csv --out views/ [--per-clip 10] [--seconds 5]

With a few hundred clips, distilling a foundation model on the clips themselves gives the student the teacher's
view of those clips only. Beyer et al. (2022, "Knowledge distillation: A good teacher is patient and consistent")
get more from the same images by letting the teacher label the student's own augmented and mixed inputs, for many
epochs. Here the views are audio: each is a random crop of a clip blended with a random crop of another clip at a
random share (``--mix`` range; 0 = the clip alone) and random levels, written as 16-bit WAV files. The folder then
is an unlabeled pool like any other: ``[self_training] pool_dir = views/`` with a teacher (e.g. the BirdNET head of
the same fold) labels every view, and the student trains on the views with the teacher's soft targets, teacher and
student hearing exactly the same sound. The teacher's cost is one pass over the views (its windows per second in
the benchmark), not one per epoch.
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def crop(audio: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n``-sample crop (a shorter clip looped to ``n``)."""
    if len(audio) < n:
        audio = np.tile(audio, -(-n // max(1, len(audio))))
    start = int(rng.integers(0, len(audio) - n + 1))
    return audio[start:start + n]


def mix_view(a: np.ndarray, b: np.ndarray, share: float, gain_db: tuple[float, float]) -> np.ndarray:
    """``a`` and ``b`` (same length) blended: ``(1 - share) a + share b`` at levels changed by ``gain_db`` dB each,
    peak-normalised below full scale only when it would clip."""
    y = (1 - share) * a * 10 ** (gain_db[0] / 20) + share * b * 10 ** (gain_db[1] / 20)
    peak = float(np.abs(y).max()) if len(y) else 0.0
    return (y / peak * 0.99 if peak > 0.99 else y).astype(np.float32)


def _views_of(task: tuple) -> list[str]:
    """Write the views of clip ``i`` (a worker's share; its own seed, so any number of workers writes the same)."""
    import soundfile as sf  # noqa: PLC0415

    from dataloader.audio import AudioError, load_audio  # noqa: PLC0415

    i, paths, out, per_clip, seconds, sample_rate, mix, seed = task
    rng = np.random.default_rng([seed, i])
    n = int(round(seconds * sample_rate))
    try:
        own = load_audio(paths[i], sample_rate)
    except AudioError:
        return []
    written = []
    for k in range(per_clip):
        j = int(rng.integers(0, len(paths) - 1))
        j += j >= i  # another clip
        try:
            other = load_audio(paths[j], sample_rate)
        except AudioError:
            other = np.zeros(n, np.float32)
        share = float(rng.uniform(*mix))
        view = mix_view(crop(own, n, rng), crop(other, n, rng), share, tuple(rng.uniform(-6, 6, size=2)))
        path = Path(out) / f"view_{i:05d}_{k:02d}.wav"
        sf.write(path, view, sample_rate, subtype="PCM_16")
        written.append(path.name)
    return written


def write_views(paths: Sequence[str | Path], out: str | Path, per_clip: int = 10, seconds: float = 5.0,
                sample_rate: int = 32000, mix: tuple[float, float] = (0.0, 0.5), seed: int = 0, workers: int = 0
                ) -> list[Path]:
    """``per_clip`` mixed views of every clip of ``paths`` in ``out`` (see the module docstring), on ``workers``
    processes (0: every core); an unreadable clip gets no views. Returns the files written."""
    from utils.runtime import available_cores  # noqa: PLC0415

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in paths]
    if len(paths) < 2:
        raise ValueError("mixed views need at least two clips")
    tasks = [(i, paths, str(out), per_clip, seconds, sample_rate, mix, seed) for i in range(len(paths))]
    with ProcessPoolExecutor(max_workers=workers or available_cores()) as pool:
        names = [name for part in pool.map(_views_of, tasks, chunksize=8) for name in part]
    (out / "views.json").write_text(json.dumps({"clips": len(paths), "per_clip": per_clip, "seconds": seconds,
                                                "sample_rate": sample_rate, "mix": list(mix), "seed": seed,
                                                "views": len(names)}))
    return [out / name for name in names]


def main(argv: list[str] | None = None) -> int:
    import pandas as pd  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", required=True, help="a table with a path column (a run's split/train.csv), or a folder")
    p.add_argument("--out", required=True)
    p.add_argument("--per-clip", type=int, default=10)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--sample-rate", type=int, default=32000)
    p.add_argument("--mix", type=float, nargs=2, default=(0.0, 0.5), metavar=("LOW", "HIGH"),
                   help="the other clip's share, drawn uniformly in this range")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    clips = Path(args.clips)
    if clips.is_dir():
        from dataloader.audio import audio_files  # noqa: PLC0415

        paths = audio_files(clips)
    else:
        paths = list(pd.read_csv(clips)["path"])
    files = write_views(paths, args.out, args.per_clip, args.seconds, args.sample_rate, tuple(args.mix), args.seed)
    print(json.dumps({"clips": len(paths), "views": len(files), "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
