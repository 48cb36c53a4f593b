"""The submission on today's Kaggle: wheels for every notebook Python (tags, manifest, the notebook's own check),
data found wherever Kaggle mounts it, each edition's clock-guard default and dry-run folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataloader.sources.editions import dry_run_folder, guard_minutes
from inference.kaggle_paths import find_folders, is_competition, is_model_dataset, locate
from inference.package import check_compatible, wheel_pythons, write_manifest


def test_wheel_tags_say_which_pythons_can_install_them():
    assert wheel_pythons({"cp312-cp312-manylinux_2_28_x86_64"}, ["3.11", "3.12", "3.13"]) == ["3.12"]
    assert wheel_pythons({"cp310-abi3-manylinux2014_x86_64"}, ["3.9", "3.10", "3.13"]) == ["3.10", "3.13"]
    assert wheel_pythons({"py3-none-any"}, ["3.10", "3.13"]) == ["3.10", "3.13"]
    assert wheel_pythons({"py2-none-any", "py3-none-any"}, ["3.12"]) == ["3.12"]


def fake_wheels(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"x" * 10)
    return folder


def test_the_manifest_records_versions_pythons_and_the_pythons_every_runtime_covers(tmp_path):
    wheels = fake_wheels(tmp_path / "wheels", [
        "onnxruntime-1.23.2-cp310-cp310-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "onnxruntime-1.32.0-cp312-cp312-manylinux_2_28_x86_64.whl",
        "openvino-2026.4.1-22982-cp311-cp311-manylinux_2_28_x86_64.whl",
        "openvino-2026.4.1-22982-cp312-cp312-manylinux_2_28_x86_64.whl",
        "flatbuffers-25.12.19-py2.py3-none-any.whl"])
    manifest = write_manifest(wheels, ["onnxruntime==1.32.0", "openvino==2026.4.1"], ["3.10", "3.11", "3.12"],
                              ["manylinux_2_28_x86_64"])
    assert manifest["pythons"] == ["3.11", "3.12"], "3.10 lacks an OpenVINO wheel"
    ort = manifest["packages"]["onnxruntime"]
    assert ort["exporter_version"] == "1.32.0" and ort["per_python"]["3.10"] == ["1.23.2"]
    assert manifest["packages"]["openvino"]["versions"] == ["2026.4.1"]
    assert manifest["total_bytes"] == 60 and "export and runtime versions are the same" in manifest["rule"]
    assert json.loads((wheels / "manifest.json").read_text()) == manifest


def test_the_notebooks_check_names_the_pythons_held_instead_of_a_pip_traceback(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"pythons": ["3.10", "3.11", "3.12", "3.13"]}))
    check_compatible(path, (3, 12), "x86_64", "linux")  # fits: no error
    with pytest.raises(SystemExit) as err:
        check_compatible(path, (3, 14), "x86_64", "linux")
    text = str(err.value)
    assert "Python 3.14" in text and "3.10, 3.11, 3.12, 3.13" in text
    assert "python -m inference.package --python-version 3.14" in text
    with pytest.raises(SystemExit, match="x86-64 Linux"):
        check_compatible(path, (3, 12), "aarch64", "linux")


def kaggle_input(root: Path, layout: str) -> tuple[Path, Path]:
    """An input root laid out as Kaggle mounts a competition and a dataset (``today`` or ``2024``)."""
    comp = root / ("competitions/birdclef-2026" if layout == "today" else "birdclef-2024")
    model = root / ("datasets/someone/birdclef-models" if layout == "today" else "birdclef-models")
    (comp / "test_soundscapes").mkdir(parents=True)
    (comp / "train_audio" / "a").mkdir(parents=True)
    (comp / "sample_submission.csv").write_text("row_id,a\n")
    (model / "inference").mkdir(parents=True)
    (model / "predict.py").write_text("")
    return comp, model


@pytest.mark.parametrize("layout", ["today", "2024"])
def test_competition_and_model_folders_are_found_in_both_mount_layouts(tmp_path, layout):
    comp, model = kaggle_input(tmp_path / "input", layout)
    assert locate("competition", "X_COMP", str(tmp_path / "input"), is_competition, environ={}) == str(comp)
    assert locate("models", "X_MODEL", str(tmp_path / "input"), is_model_dataset, environ={}) == str(model)
    assert locate("models", "X_MODEL", str(tmp_path / "input"), is_model_dataset,
                  environ={"X_MODEL": "/given"}) == "/given", "the environment overrides"


def test_none_or_two_candidates_stop_with_the_paths_looked_at(tmp_path):
    root = tmp_path / "input"
    root.mkdir()
    (root / "datasets" / "someone").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"No competition under .*input \(searched 3 folders.*datasets/someone.*X_COMP"):
        locate("competition", "X_COMP", str(root), is_competition, environ={})
    kaggle_input(root / "a", "today")
    kaggle_input(root / "b", "2024")
    with pytest.raises(SystemExit) as err:
        locate("competition", "X_COMP", str(root), is_competition, environ={})
    assert "2 candidates" in str(err.value) and "birdclef-2026" in str(err.value) and "X_COMP" in str(err.value)
    found, _ = find_folders(str(root), is_competition, depth=1)
    assert found == [], "the search is bounded"


def edition_dir(root: Path, edition: str, soundscapes: bool = True) -> Path:
    files = {"2024": ("train_metadata.csv", "eBird_Taxonomy_v2021.csv"), "2025": ("train.csv", "taxonomy.csv"),
             "2026": ("train.csv", "taxonomy.csv", "train_soundscapes_labels.csv")}[edition]
    root.mkdir(parents=True)
    for name in files:
        (root / name).write_text("x\n")
    (root / "test_soundscapes").mkdir()
    if soundscapes:
        folder = root / ("unlabeled_soundscapes" if edition == "2024" else "train_soundscapes")
        folder.mkdir()
        (folder / "S01_20250101_000000.OGG").write_bytes(b"x")
    return root


@pytest.mark.parametrize("edition, minutes, scapes", [("2024", 110, "unlabeled_soundscapes"),
                                                      ("2025", 80, "train_soundscapes"),
                                                      ("2026", 80, "train_soundscapes")])
def test_each_edition_has_its_clock_guard_default_and_dry_run_folder(tmp_path, edition, minutes, scapes):
    folder = edition_dir(tmp_path / edition, edition)
    assert guard_minutes(folder)[0] == minutes
    assert dry_run_folder(folder / "test_soundscapes") == folder / scapes


def test_an_unrecognised_folder_gets_the_shortest_limit_and_no_soundscapes_no_dry_run(tmp_path):
    folder = tmp_path / "scoring"
    (folder / "test_soundscapes").mkdir(parents=True)
    minutes, why = guard_minutes(folder)
    assert minutes == 80 and "not recognised" in why
    assert dry_run_folder(folder / "test_soundscapes") is None


def test_the_notebook_stops_with_the_message_when_its_python_is_not_shipped(tmp_path):
    import os
    import subprocess
    import sys

    from inference.package import assemble

    root = tmp_path / "input"
    comp, _ = kaggle_input(root, "today")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not a model: the check stops before any model is read")
    dataset = assemble([model], root / "datasets" / "someone" / "birdclef-models", "someone/birdclef-models")
    (dataset / "wheels").mkdir()
    (dataset / "wheels" / "manifest.json").write_text(json.dumps({"pythons": ["3.99"]}))
    notebook = json.loads((Path(__file__).resolve().parents[1] / "submissions" / "kaggle_inference.ipynb").read_text())
    cells = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    prelude = ("import importlib.util\n_find = importlib.util.find_spec\n"  # as on an image without the runtimes
               "importlib.util.find_spec = lambda name, *a: None if name in ('onnxruntime', 'openvino') "
               "else _find(name, *a)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIRDCLEF_")}
    env.update(BIRDCLEF_INPUT_ROOT=str(root), BIRDCLEF_OUT=str(tmp_path / "s.csv"))
    result = subprocess.run([sys.executable, "-c", prelude + "\n".join(cells[:2])], env=env, capture_output=True,
                            text=True, timeout=120)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"this notebook runs Python {here}, the package holds wheels for Python 3.99" in result.stderr
    assert f"python -m inference.package --python-version {here}" in result.stderr
    assert str(comp) in result.stdout, "the competition folder was found first"


def test_predict_names_a_damaged_checkpoint_in_one_line(tmp_path, caplog):
    import numpy as np
    import soundfile as sf

    import predict as predict_cli

    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "a.wav", np.zeros(32000, dtype=np.float32), 32000)
    damaged = tmp_path / "model.pt"
    damaged.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    code = predict_cli.main(["--checkpoint", str(damaged), "--audio-dir", str(tmp_path / "audio"),
                             "--out", str(tmp_path / "s.csv")])
    assert code == 2 and f"{damaged}: damaged or truncated" in caplog.text
