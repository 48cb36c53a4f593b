"""Assemble a Kaggle dataset folder for an offline submission notebook, and optionally push it.

    python -m inference.package --model exported/a.onnx exported/b.xml [runs/<id>/checkpoints/best.pt]
                                --out kaggle_dataset --dataset-id <user>/birdclef-models
                                [--wheels onnxruntime openvino | --no-wheels] [--python-version 3.10 ... 3.13]
                                [--platform manylinux_2_28_x86_64 ...] [--push]

The folder holds ``predict.py`` and the packages it imports (``inference``, ``dataloader``, ``factory``,
``utils``), the models under ``models/`` (exports with their ``.json``/``.bin``), ``dataset-metadata.json`` and
the wheels the notebook installs offline: for every runtime Kaggle's image lacks (ONNX Runtime, OpenVINO; never
torch), one set per CPython 3.10-3.13 on x86-64 Linux, with the platform tags current wheels carry
(``manylinux_2_28`` and the older ``manylinux_2_17``/``manylinux2014``). Versions are pinned to the ones installed
here, the ones the exporter used: **export and runtime versions are the same**, so an OpenVINO IR written by the
exporter loads in the shipped runtime. ``wheels/manifest.json`` records what the package holds (versions, Pythons,
platforms, each wheel's tags and size); the notebook checks its own Python against it before installing.
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from utils.checkpoints import ModelMeta

ROOT = Path(__file__).resolve().parents[1]
CODE = ("predict.py", "inference", "dataloader", "factory", "utils")
DEFAULT_WHEELS = ("onnxruntime", "openvino")
# ONNX Runtime reads any model whose opset it supports, so a Python the pinned release no longer publishes for (1.32
# dropped 3.10) gets the newest older release that does; OpenVINO reads only IRs of its own release: never relaxed.
OLDER_RUNTIME_OK = ("onnxruntime",)
PYTHON_VERSIONS = ("3.10", "3.11", "3.12", "3.13")  # Kaggle: 3.10 (2024), 3.11 (2025), 3.12 (since Dec 2025)
# pip matches --platform tags exactly: current onnxruntime/openvino wheels are manylinux_2_28, numpy's add
# manylinux_2_27, older and pure ones manylinux_2_17 / manylinux2014
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def model_files(model: Path) -> list[Path]:
    """A model and the files that travel with it (metadata ``.json``; OpenVINO weights ``.bin``)."""
    files = [model]
    for suffix in (".json", ".bin"):
        side = model.with_suffix(suffix)
        if side.is_file() and side != model:
            files.append(side)
    return files


def embedding_needs(models: list[str | Path]) -> tuple[list[str], list[str]]:
    """(runtime packages, model file names) the embedding members of ``models`` need at inference: ai-edge-litert
    for a TFLite model (BirdNET), and each embedding model's file, found by name in the notebook's ``embedders/``."""
    packages, files = [], []
    for model in models:
        path = Path(model)
        meta = model_meta(path)
        if meta.input != "embedding":
            continue
        settings = meta.data_process
        name = Path(settings.get("model_path") or "").name or str(settings.get("model_id", "")).split(":")[0]
        files.append(name)
        if name.endswith(".tflite"):
            packages.append("ai-edge-litert")
    return sorted(set(packages)), sorted(set(files))


RUNTIME_BY_SUFFIX = {".onnx": "onnxruntime", ".xml": "openvino"}  # what an exported member runs on
RUNTIMES_FILE = "runtimes.json"  # in models/: the runtime packages the ensemble needs


def runtimes_needed(models: list[str | Path], embedding_runtimes: list[str] = ()) -> list[str]:
    """The runtime packages the ensemble ``models`` needs at inference: ONNX Runtime for ``.onnx`` members,
    OpenVINO for ``.xml``, and ``embedding_runtimes`` (what its embedding members run on, :func:`embedding_needs`:
    ai-edge-litert for BirdNET); torch members need nothing beyond Kaggle's image."""
    exported = {RUNTIME_BY_SUFFIX[Path(m).suffix] for m in models if Path(m).suffix in RUNTIME_BY_SUFFIX}
    return sorted(exported | set(embedding_runtimes))


def install_command(wheels: str | Path, needed: list[str], constraints: str | Path, python: str = sys.executable
                    ) -> list[str]:
    """The pip command that installs ``needed`` from the shipped ``wheels`` alone (no index), held to the versions
    of ``constraints`` (every package the image has, as installed): it adds what is missing and changes nothing
    the image holds, or fails saying which installed package a runtime would need changed."""
    return [python, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--constraint",
            str(constraints), "--disable-pip-version-check", *needed]


def install_runtimes(model_dir: str | Path, python: str = sys.executable, dry_run: bool = False) -> list[str]:
    """In the notebook: install, from ``model_dir/wheels``, the runtimes the ensemble needs (``models/runtimes.json``,
    written by :func:`assemble`) that this Python cannot import, without touching the image's packages (each held
    at its installed version by a constraints file from ``pip freeze``). Returns what it installed; a conflict
    stops with one plain message. Standard library only."""
    import importlib.util  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    model_dir = Path(model_dir)
    listed = model_dir / "models" / RUNTIMES_FILE
    needed = (json.loads(listed.read_text())["packages"] if listed.is_file()
              else sorted({RUNTIME_BY_SUFFIX[p.suffix] for p in (model_dir / "models").iterdir()
                           if p.suffix in RUNTIME_BY_SUFFIX}))
    missing = [name for name in needed if importlib.util.find_spec(name.replace("-", "_")) is None]
    if not missing:
        return []
    wheels = model_dir / "wheels"
    if (wheels / "manifest.json").is_file():
        import platform  # noqa: PLC0415

        check_compatible(wheels / "manifest.json", sys.version_info[:2], platform.machine(), sys.platform)
    frozen = subprocess.run([python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True)
    held = [line for line in frozen.stdout.splitlines() if "==" in line and not line.startswith("-e")]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(held) + "\n")
    command = install_command(wheels, missing, f.name, python) + (["--dry-run"] if dry_run else [])
    done = subprocess.run(command, capture_output=True, text=True)
    Path(f.name).unlink(missing_ok=True)
    if done.returncode != 0:
        last = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()][-3:]
        raise SystemExit(f"Installing {', '.join(missing)} from the shipped wheels would change this image's "
                         f"packages or finds no fitting wheel, so nothing was installed: {' | '.join(last)}. Ship "
                         f"runtime versions that accept this image's packages (python -m inference.package, pinning "
                         f"--wheels to such versions).")
    return missing


def model_meta(path: Path) -> ModelMeta:
    """A member's metadata (torch is imported only for a ``.pt`` member)."""
    from inference.backends import load_metadata  # noqa: PLC0415

    return load_metadata(path)


def assemble(models: list[str | Path], out: str | Path, dataset_id: str, title: str = "",
             embedding_models: list[str | Path] = ()) -> Path:
    """Write the dataset folder (code, models, metadata, and the ``embedding_models`` files the user may
    redistribute, into ``embedders/``); returns it."""
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
    for model in (Path(m) for m in embedding_models):
        (out / "embedders").mkdir(exist_ok=True)
        for f in (model, model.with_suffix(".json"), model.with_name("BirdNET_GLOBAL_6K_V2.4_Labels.txt")):
            if f.is_file():
                shutil.copy2(f, out / "embedders" / f.name)
    (out / "dataset-metadata.json").write_text(json.dumps(
        {"title": title or dataset_id.split("/")[-1], "id": dataset_id, "licenses": [{"name": "CC0-1.0"}]}, indent=1))
    return out


def pinned(packages: list[str]) -> list[str]:
    """``name==version`` of the installed version of each package (the exporter's); a package not installed
    here stays unpinned (newest), said on stderr."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    out = []
    for name in packages:
        if "=" in name or "<" in name or ">" in name:
            out.append(name)
            continue
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            print(f"inference.package: {name} is not installed here, so its newest wheel is shipped; export with "
                  f"the same version to be sure the runtime reads your models", file=sys.stderr)
            out.append(name)
    return out


def download_wheels(out: Path, packages: list[str], python_versions: list[str] | tuple[str, ...] = PYTHON_VERSIONS,
                    platforms: list[str] | tuple[str, ...] = PLATFORMS) -> list[str]:
    """``pip download`` binary wheels (with dependencies) of ``packages`` for each of ``python_versions`` on
    ``platforms`` into ``out/wheels``, and write ``wheels/manifest.json``; returns the wheel file names."""
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    platform_args = [arg for platform in platforms for arg in ("--platform", platform)]
    missing: list[str] = []
    for python_version in python_versions:
        for package in packages:
            candidates = [package]
            if package.split("==")[0] in OLDER_RUNTIME_OK and "==" in package:
                candidates.append(package.replace("==", "<="))  # the newest release that has this Python
            for spec in candidates:
                done = subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
                                       "--only-binary=:all:", "--dest", str(wheels), "--python-version",
                                       python_version, *platform_args, spec], capture_output=True, text=True)
                if done.returncode == 0:
                    break
                if "No matching distribution" not in done.stderr:
                    raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
            else:
                missing.append(f"{package} for Python {python_version}")
    if missing:
        print(f"inference.package: no wheel of {'; '.join(missing)} (that release does not publish one)",
              file=sys.stderr)
    write_manifest(wheels, packages, python_versions, platforms)
    return sorted(p.name for p in wheels.glob("*.whl"))


def wheel_pythons(tags: set[str], python_versions: list[str] | tuple[str, ...]) -> list[str]:
    """Which of ``python_versions`` (``"3.12"``) can install a wheel of ``tags`` (``"cp312-cp312-manylinux..."``):
    a matching ``cpXY`` interpreter, an ``abi3`` wheel of an older or equal CPython, or a pure ``py3``/``py2.py3``."""
    out = []
    for version in python_versions:
        major, minor = (int(x) for x in version.split("."))
        for tag in tags:
            interpreter, abi, _ = tag.split("-")
            if interpreter in (f"cp{major}{minor}", f"py{major}", f"py{major}{minor}") and abi in (
                    "none", "abi3", f"cp{major}{minor}"):
                out.append(version)
                break
            if abi == "abi3" and interpreter.startswith("cp3") and int(interpreter[3:] or 0) <= minor:
                out.append(version)
                break
    return out


def write_manifest(wheels: Path, packages: list[str], python_versions: list[str] | tuple[str, ...],
                   platforms: list[str] | tuple[str, ...]) -> dict:
    """``wheels/manifest.json``: the runtime packages and their versions, the Pythons every one of them has a
    wheel for, the platforms asked for, and each wheel (file, name, version, tags, bytes)."""
    from packaging.utils import canonicalize_name, parse_wheel_filename  # noqa: PLC0415

    entries = []
    for path in sorted(wheels.glob("*.whl")):
        name, version, _, tags = parse_wheel_filename(path.name)
        tag_set = {str(t) for t in tags}
        entries.append({"file": path.name, "name": str(name), "version": str(version), "bytes": path.stat().st_size,
                        "tags": sorted(tag_set), "pythons": wheel_pythons(tag_set, python_versions)})
    held = {}
    for spec in packages:
        name = canonicalize_name(spec.split("=")[0].split("<")[0].split(">")[0])
        mine = [e for e in entries if canonicalize_name(e["name"]) == name]
        pin = spec.split("==")[1] if "==" in spec else None
        held[str(name)] = {"exporter_version": pin, "versions": sorted({e["version"] for e in mine}),
                           "pythons": sorted({v for e in mine for v in e["pythons"]}, key=_version_key),
                           "per_python": {v: sorted({e["version"] for e in mine if v in e["pythons"]})
                                          for v in python_versions}}
    pythons = [v for v in python_versions if all(v in h["pythons"] for h in held.values())]
    manifest = {"packages": held, "pythons": pythons, "platforms": list(platforms), "wheels": entries,
                "total_bytes": sum(e["bytes"] for e in entries),
                "rule": "export and runtime versions are the same (pinned to the exporter's)"}
    (wheels / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def check_compatible(manifest_path: str | Path, version: tuple[int, int], machine: str, system: str) -> None:
    """Raise ``SystemExit`` with a plain message when the shipped wheels (``wheels/manifest.json``) do not fit
    this interpreter (``version`` = ``sys.version_info[:2]``, ``platform.machine()``, ``sys.platform``): which
    Pythons the package holds and how to rebuild it, instead of a pip traceback."""
    manifest = json.loads(Path(manifest_path).read_text())
    here = f"{version[0]}.{version[1]}"
    problems = []
    if here not in manifest["pythons"]:
        problems.append(f"this notebook runs Python {here}, the package holds wheels for Python "
                        f"{', '.join(manifest['pythons']) or 'none'}")
    if machine != "x86_64" or not system.startswith("linux"):
        problems.append(f"this notebook runs on {system} {machine}, the wheels are for x86-64 Linux")
    if problems:
        raise SystemExit("The shipped wheels do not fit: " + "; ".join(problems) + ". Rebuild the dataset with "
                         f"`python -m inference.package --python-version {here} ...` (or the default, which "
                         f"covers 3.10-3.13) and attach the new version.")


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
    p.add_argument("--wheels", nargs="+", default=list(DEFAULT_WHEELS),
                   help="runtime packages to ship as wheels, pinned to the versions installed here")
    p.add_argument("--no-wheels", action="store_true", help="ship no wheels (the notebook's image has them)")
    p.add_argument("--python-version", nargs="+", default=list(PYTHON_VERSIONS),
                   help="CPython versions to ship wheels for (the notebook checks its own against them)")
    p.add_argument("--platform", nargs="+", default=list(PLATFORMS), help="platform tags pip may take, all of them "
                   "(pip matches them exactly)")
    p.add_argument("--embedding-model", nargs="*", default=[], help="embedding model files to ship in embedders/ "
                   "(only files you may redistribute: BirdNET's are CC BY-NC-SA 4.0 and are never shipped by default)")
    p.add_argument("--push", action="store_true")
    args = p.parse_args(argv)
    out = assemble(args.model, args.out, args.dataset_id, embedding_models=args.embedding_model)
    report = {"folder": str(out), "models": sorted(f.name for f in (out / "models").iterdir())}
    runtimes, needed = embedding_needs(args.model)
    (out / "models" / RUNTIMES_FILE).write_text(json.dumps({"packages": runtimes_needed(args.model, runtimes)}))
    shipped = {Path(m).name for m in args.embedding_model}
    if needed:
        report["embedding_models"] = {name: "shipped" if name in shipped else "attach it" for name in needed}
        for name in sorted(set(needed) - shipped):
            print(f"inference.package: {name} is not in the dataset (its licence may forbid it): attach a dataset "
                  f"holding it to the notebook (it is found there by file name)", file=sys.stderr)
    if not args.no_wheels:
        report["wheels"] = download_wheels(out, pinned([*args.wheels, *runtimes]), args.python_version,
                                           args.platform)
        manifest = json.loads((out / "wheels" / "manifest.json").read_text())
        report["pythons"], report["wheel_bytes"] = manifest["pythons"], manifest["total_bytes"]
    if args.push:
        push(out)
        report["pushed"] = True
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
