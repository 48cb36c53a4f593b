"""The Kaggle notebook and predict.py on a trained model: headless and offline over a packaged dataset, the data and
models found wherever Kaggle mounts them, each edition's dry run and clock guard, any audio format."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import train_classifier
from inference.submission import validate_submission

NOTEBOOK_PRELUDE = """
import socket, sys
def _no_network(*args, **kwargs):
    raise OSError("network access is blocked in this test, as in a Kaggle submission")
socket.socket.connect = _no_network
socket.create_connection = _no_network
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("neptune", "kaggle", "mlflow"):
            raise ModuleNotFoundError(f"No module named {name!r} (not in Kaggle's notebook)")
        return None
sys.meta_path.insert(0, _Blocked())
"""


def test_kaggle_notebook_runs_headless_on_a_packaged_dataset_offline(run, tmp_path):
    import os
    import subprocess
    import sys

    from inference.package import assemble

    root = Path(train_classifier.__file__).resolve().parent
    dataset = assemble([run["summary"]["checkpoint"]], tmp_path / "dataset", "someone/birdclef-models")
    meta = json.loads((dataset / "dataset-metadata.json").read_text())
    assert meta["id"] == "someone/birdclef-models" and (dataset / "predict.py").is_file()
    assert [p.suffix for p in (dataset / "models").iterdir()] == [".pt"]
    notebook = json.loads((root / "submissions" / "kaggle_inference.ipynb").read_text())
    code = NOTEBOOK_PRELUDE + "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    out = tmp_path / "working" / "submission.csv"
    out.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(BIRDCLEF_MODEL_DIR=str(dataset), BIRDCLEF_AUDIO_DIR=str(run["demo"] / "test_soundscapes"),
               BIRDCLEF_OUT=str(out), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    columns = list(pd.read_csv(run["demo"] / "sample_submission.csv", nrows=0).columns)
    validate_submission(pd.read_csv(out), columns[1:])


def kaggle_root(tmp_path: Path, demo: Path, layout: str, checkpoint: str, empty_test: bool) -> Path:
    """A stand-in for /kaggle/input: the competition (a demo folder) and the packaged model dataset, mounted as
    Kaggle does today (competitions/<slug>, datasets/<owner>/<slug>) or as in 2024 (<slug>)."""
    import shutil

    from inference.package import assemble

    slug = {"2024": "birdclef-2024"}.get(layout, f"birdclef-{layout}")
    root = tmp_path / "input"
    comp = root / (slug if layout == "2024" else f"competitions/{slug}")
    models = root / ("birdclef-models" if layout == "2024" else "datasets/someone/birdclef-models")
    comp.mkdir(parents=True)
    for item in demo.iterdir():
        if item.is_file():
            shutil.copy2(item, comp / item.name)
        elif item.name != "test_soundscapes" or not empty_test:
            (comp / item.name).symlink_to(item, target_is_directory=True)
    if empty_test:
        (comp / "test_soundscapes").mkdir()
    models.parent.mkdir(parents=True, exist_ok=True)
    assemble([checkpoint], models, "someone/birdclef-models")
    return root


@pytest.mark.parametrize("layout, empty_test", [("2026", False), ("2024", False), ("2024", True), ("2025", True),
                                                ("2026", True)])
def test_the_notebook_finds_data_and_models_wherever_kaggle_mounts_them(run, edition_demos, tmp_path, layout,
                                                                        empty_test):
    import os
    import subprocess
    import sys

    demo = run["demo"] if layout == "2024" else edition_demos[layout]
    root = kaggle_root(tmp_path, demo, layout, run["summary"]["checkpoint"], empty_test)
    notebook = json.loads((Path(train_classifier.__file__).resolve().parent / "submissions" /
                           "kaggle_inference.ipynb").read_text())
    code = NOTEBOOK_PRELUDE + "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    out = tmp_path / "working" / "submission.csv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("BIRDCLEF_")}
    env.update(BIRDCLEF_INPUT_ROOT=str(root), BIRDCLEF_OUT=str(out), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    columns = list(pd.read_csv(demo / "sample_submission.csv", nrows=0, dtype=str).columns)[1:]
    submission = pd.read_csv(out)
    validate_submission(submission, columns)
    assert f"clock guard: {110 if layout == '2024' else 80} minutes" in result.stderr
    stems = {r.rsplit("_", 1)[0] for r in submission["row_id"]}
    scapes = demo / ("unlabeled_soundscapes" if layout == "2024" else "train_soundscapes")
    source = sorted(p.stem for p in scapes.glob("*.ogg"))[:3] if empty_test else \
        [p.stem for p in (demo / "test_soundscapes").glob("*.ogg")]
    assert stems == set(source), "a dry run predicts the edition's own soundscapes"


def test_predict_reads_wav_flac_and_mp3_with_any_case_of_extension(run, tmp_path):
    import predict as predict_cli

    sr = 32000
    folder = tmp_path / "field"
    folder.mkdir()
    tone = (0.1 * np.sin(2 * np.pi * 3000 * np.arange(int(7.5 * sr)) / sr)).astype(np.float32)
    sf.write(folder / "a.WAV", tone, sr)
    sf.write(folder / "b.flac", np.stack([tone, tone], axis=1), sr)  # stereo
    sf.write(folder / "c.Mp3", tone, sr, format="MP3")
    sf.write(folder / "d.ogg", tone[: 3 * sr], sr)
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "sub.csv"
    assert predict_cli.main(["--checkpoint", run["summary"]["checkpoint"], "--audio-dir", str(folder),
                             "--out", str(out)]) == 0
    ids = pd.read_csv(out)["row_id"].tolist()
    assert ids == ["a_5", "a_10", "b_5", "b_10", "c_5", "c_10", "d_5"], "one row per window of every file"
