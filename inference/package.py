"""Assemble a Kaggle dataset folder for an offline submission notebook, and optionally push it.

    python -m inference.package --model exported/a.onnx exported/b.xml [runs/<id>/checkpoints/best.pt]
                                --out kaggle_dataset --dataset-id <user>/birdclef-models
                                [--wheels onnxruntime openvino] [--python-version 3.11] [--push]

The folder holds ``predict.py`` and the packages it imports (``inference``, ``dataloader``, ``factory``,
``utils``), the models under ``models/`` (exports with their ``.json``/``.bin``), the wheels the notebook
installs offline (downloaded once with ``pip download`` for Kaggle's platform), and ``dataset-metadata.json``.
``--push`` runs ``kaggle datasets create`` (or ``version`` when the dataset exists). Attach it and the
competition to ``submissions/kaggle_inference.ipynb``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("predict.py", "inference", "dataloader", "factory", "utils")
DEFAULT_WHEELS = ("onnxruntime", "openvino")


def model_files(model: Path) -> list[Path]:
    """A model and the files that travel with it (metadata ``.json``; OpenVINO weights ``.bin``)."""
    files = [model]
    for suffix in (".json", ".bin"):
        side = model.with_suffix(suffix)
        if side.is_file() and side != model:
            files.append(side)
    return files


def assemble(models: list[str | Path], out: str | Path, dataset_id: str, title: str = "") -> Path:
    """Write the dataset folder (code, models, metadata); returns it."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "models").mkdir(parents=True)
    for name in CODE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, out / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, out / name)
    for i, model in enumerate(Path(m) for m in models):
        if not model.is_file():
            raise FileNotFoundError(f"{model}: no such model file")
        stem = model.stem if model.stem not in ("best", "last") else f"{model.parent.parent.name}"
        for f in model_files(model):
            shutil.copy2(f, out / "models" / f"{i:02d}_{stem}{f.suffix}")
    (out / "dataset-metadata.json").write_text(json.dumps(
        {"title": title or dataset_id.split("/")[-1], "id": dataset_id, "licenses": [{"name": "CC0-1.0"}]}, indent=1))
    return out


def download_wheels(out: Path, packages: list[str], python_version: str, platform: str) -> list[str]:
    """``pip download`` binary wheels (with dependencies) for Kaggle's Python into ``out/wheels``."""
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(wheels),
                    "--python-version", python_version, "--platform", platform, *packages], check=True)
    return sorted(p.name for p in wheels.glob("*.whl"))


def push(out: Path, message: str = "new models") -> None:
    """``kaggle datasets version`` when the dataset exists, else ``kaggle datasets create`` (Kaggle CLI)."""
    kaggle = shutil.which("kaggle")
    if kaggle is None:
        raise RuntimeError("the Kaggle CLI is not installed (pip install kaggle)")
    dataset_id = json.loads((out / "dataset-metadata.json").read_text())["id"]
    exists = subprocess.run([kaggle, "datasets", "status", dataset_id], capture_output=True, text=True).returncode == 0
    cmd = ([kaggle, "datasets", "version", "-p", str(out), "-m", message, "--dir-mode", "zip"] if exists else
           [kaggle, "datasets", "create", "-p", str(out), "--dir-mode", "zip"])
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", nargs="+", required=True)
    p.add_argument("--out", default="kaggle_dataset")
    p.add_argument("--dataset-id", required=True, help="<kaggle user>/<dataset slug>")
    p.add_argument("--wheels", nargs="*", help=f"download these wheels (no names: {' '.join(DEFAULT_WHEELS)})")
    p.add_argument("--python-version", default="3.11", help="the Python of Kaggle's notebook image")
    p.add_argument("--platform", default="manylinux2014_x86_64")
    p.add_argument("--push", action="store_true")
    args = p.parse_args(argv)
    out = assemble(args.model, args.out, args.dataset_id)
    report = {"folder": str(out), "models": sorted(f.name for f in (out / "models").iterdir())}
    if args.wheels is not None:
        report["wheels"] = download_wheels(out, args.wheels or list(DEFAULT_WHEELS), args.python_version,
                                           args.platform)
    if args.push:
        push(out)
        report["pushed"] = True
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
