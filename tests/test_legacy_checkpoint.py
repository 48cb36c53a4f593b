"""A checkpoint written before the checkpoint contract was typed (format 1, commit 8b51262) still loads, predicts
and detects the same rows as it did then, and resumes training (tests/data/make_legacy_references.sh made it)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import detect
import predict
import train_classifier
from legacy_audio import write_legacy_audio
from utils.checkpoints import META_FORMAT, CheckpointError, ModelMeta, load_checkpoint, load_model_meta

DATA = Path(__file__).resolve().parent / "data"
LEGACY = DATA / "legacy_v0_tiny.pt"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> dict[str, Path]:
    """The stored checkpoint, alone in a folder (no training run beside it), and the recordings it was run on."""
    work = tmp_path_factory.mktemp("legacy")
    (work / "model").mkdir()
    shutil.copy(LEGACY, work / "model" / "legacy.pt")
    return {"work": work, "ckpt": work / "model" / "legacy.pt", "audio": write_legacy_audio(work / "audio")}


def test_an_old_checkpoint_gets_its_defaults_in_one_place():
    payload = load_checkpoint(LEGACY)
    assert "format" not in payload  # written before the format existed
    meta = load_model_meta(LEGACY)
    assert meta.format == 1 and meta.input == "mel" and meta.pad_mode == "repeat" and meta.activation == "sigmoid"
    assert meta.task == "multilabel" and meta.classes == meta.labels and len(meta.labels) == 12
    again = ModelMeta.from_payload(meta.to_dict())  # what a new checkpoint or export stores
    assert again.format == META_FORMAT and again == ModelMeta(**{**vars(meta), "format": META_FORMAT})
    legacy_like = {k: v for k, v in payload.items() if k not in ("input", "pad_mode", "activation", "task", "classes")}
    assert ModelMeta.from_payload(legacy_like).frontend_key() == meta.frontend_key()
    with pytest.raises(CheckpointError, match="newer version"):
        ModelMeta.from_payload({**meta.to_dict(), "format": META_FORMAT + 1})
    with pytest.raises(CheckpointError, match="lacks labels"):
        ModelMeta.from_payload({k: v for k, v in meta.to_dict().items() if k != "labels"})


@pytest.mark.parametrize("extra, reference", [
    ([], "legacy_v0_predict.csv"),
    (["--smooth", "1", "--row-seconds", "2.5"], "legacy_v0_predict_2.5s_smooth1.csv"),
])
def test_it_predicts_the_rows_it_predicted_before(legacy, extra, reference):
    out = legacy["work"] / f"predict-{reference}"
    assert predict.main(["--checkpoint", str(legacy["ckpt"]), "--audio-dir", str(legacy["audio"]),
                         "--out", str(out), *extra]) == 0
    got, expected = pd.read_csv(out), pd.read_csv(DATA / reference)
    assert got["row_id"].tolist() == expected["row_id"].tolist() and list(got.columns) == list(expected.columns)
    assert np.abs(got.iloc[:, 1:].to_numpy() - expected.iloc[:, 1:].to_numpy()).max() <= TOLERANCE


def test_it_detects_the_rows_it_detected_before(legacy):
    out = legacy["work"] / "detect"
    assert detect.main(["--checkpoint", str(legacy["ckpt"]), "--audio-dir", str(legacy["audio"]), "--out-dir",
                        str(out), "--hop-s", "2.5", "--min-score", "0", "--threshold", "0.5"]) == 0
    keys = ["file", "start_s", "end_s", "class"]
    got = pd.read_csv(out / "scores.csv").sort_values(keys).reset_index(drop=True)
    expected = pd.read_csv(DATA / "legacy_v0_detect_scores_hop2.5.csv").sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[keys], expected[keys])
    assert np.abs(got["score"] - expected["score"]).max() <= TOLERANCE
    detections = pd.read_csv(out / "detections.csv")
    expected_detections = pd.read_csv(DATA / "legacy_v0_detect_detections_hop2.5.csv")
    pd.testing.assert_frame_equal(detections[["file", "class", "start_s", "end_s"]],
                                  expected_detections[["file", "class", "start_s", "end_s"]])


def test_it_resumes_training(legacy, small_demo):
    """The run it came from (the small demo, 2 epochs of tiny_dscnn) continues for a third epoch from it."""
    work = legacy["work"]
    overrides = [f"paths.demo_dir={small_demo}", f"paths.data_dir={work / 'none'}", f"paths.cache_dir={work / 'cache'}",
                 f"paths.runs_dir={work / 'runs'}", f"paths.submissions_dir={work / 'subs'}", "testing.testing=true",
                 "testing.data_samples_for_testing=24", "testing.testing_epochs=3", "data.num_workers=1",
                 "data.demo_seed=7", "data.demo_scale=0.25", "model.transfer_learning=false",
                 "trainer.batch_size=8", "model.family=tiny", "model.type=tiny_dscnn",
                 "testing.testing_model=tiny_dscnn", f"trainer.resume={legacy['ckpt']}"]
    assert train_classifier.main(["--set=" + o for o in overrides]) == 0
    (run_dir,) = list((work / "runs").iterdir())
    resumed = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    old = load_checkpoint(LEGACY)
    assert resumed["epoch"] == 3 and resumed["format"] == META_FORMAT
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][:2] == old["history"]  # the epochs it had trained are kept, not retrained
