"""Perch v2 as people get it: Kaggle Models' TensorFlow SavedModel, its TFLite and ONNX conversions (the
conversion command), found among attached inputs, and its own logits as a teacher (a member and a loop's round 0).
The model is a stand-in the tests make with Perch's signature: ``serving_default(inputs=(n, 160000))`` ->
``embedding``, ``label`` (+ ``spatial_embedding``, ``spectrogram``), labels in ``assets/labels.csv``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from dataloader.embedders import EmbedderError, load_embedder  # noqa: E402

LABELS = ["Turdus migratorius", "Cardinalis cardinalis", "Nonbird examplea", "Poecile atricapillus", "Zzz fictus"]
SAMPLES = 160000


def weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal((8, len(LABELS))).astype(np.float32)


def reference(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the stand-in computes, in numpy: a level per 10,000-sample segment, projected; logits not linear in the
    embedding (as Perch's are not)."""
    proj, cls = weights()
    frames = np.abs(windows.reshape(len(windows), 16, -1)).mean(axis=2)
    embedding = np.tanh(frames @ proj)
    return embedding, 4.0 * np.tanh(embedding @ cls) + frames[:, :1]


def perch_stand_in(folder: Path) -> Path:
    """A SavedModel with Perch v2's serving signature and label asset."""
    proj, cls = weights()

    class StandIn(tf.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.cls = tf.Variable(proj), tf.Variable(cls)

        @tf.function(input_signature=[tf.TensorSpec([None, SAMPLES], tf.float32)])
        def serve(self, inputs):
            frames = tf.reduce_mean(tf.abs(tf.reshape(inputs, [-1, 16, SAMPLES // 16])), axis=2)
            embedding = tf.tanh(tf.matmul(frames, self.proj))
            return {"embedding": embedding, "label": 4.0 * tf.tanh(tf.matmul(embedding, self.cls)) + frames[:, :1],
                    "spatial_embedding": tf.stack([embedding, embedding], axis=1),
                    "spectrogram": tf.expand_dims(frames, -1)}

    module = StandIn()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    (folder / "assets").mkdir(exist_ok=True)
    (folder / "assets" / "labels.csv").write_text("inat2024_fsd50k\n" + "\n".join(LABELS) + "\n")
    return folder


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return perch_stand_in(tmp_path_factory.mktemp("perch") / "perch_v2_cpu" / "1")


def windows(n: int, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, SAMPLES)) * 0.1).astype(np.float32)


def test_the_saved_model_loads_as_kaggle_publishes_it_and_converts_to_tflite_and_onnx(saved_model, tmp_path,
                                                                                      capsys):
    from inference import convert_perch

    x = windows(3)
    want_emb, want_logits = reference(x)
    for path in (saved_model, saved_model / "saved_model.pb"):
        model = load_embedder("perch", str(path))
        assert (model.format, model.sample_rate, model.window_s, model.dim, model.labels) == (
            "savedmodel", 32000, 5.0, 8, LABELS)
        emb, logits = model.embed(x)
        np.testing.assert_allclose(emb, want_emb, atol=1e-5)
        np.testing.assert_allclose(logits, want_logits, atol=1e-4)
    out = tmp_path / "conv" / "perch_v2.tflite"
    assert convert_perch.main(["--saved-model", str(saved_model), "--to", "tflite", "--out", str(out),
                               "--check", "4"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["labels"] == len(LABELS) and report["max_abs_diff_embedding"] < 1e-4
    assert report["max_abs_diff_logits"] < 1e-3 and report["tflite_windows_per_s"] > 0
    lite = load_embedder("perch", str(out))
    assert (lite.format, lite.dim, lite.labels) == ("tflite", 8, LABELS)  # labels read from perch_v2.labels.csv
    for n in (1, 5):  # the interpreter follows the batch size
        emb, logits = lite.embed(x[:n] if n <= len(x) else windows(n))
        np.testing.assert_allclose(emb, reference(x[:n] if n <= len(x) else windows(n))[0], atol=1e-4)
    half = tmp_path / "conv" / "perch_v2_fp16.tflite"
    assert convert_perch.main(["--saved-model", str(saved_model), "--out", str(half), "--quantize", "fp16"]) == 0
    assert half.stat().st_size < out.stat().st_size + 4096
    pytest.importorskip("tf2onnx")
    onnx_out = tmp_path / "conv" / "perch_v2.onnx"
    assert convert_perch.main(["--saved-model", str(saved_model), "--to", "onnx", "--out", str(onnx_out),
                               "--check", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["max_abs_diff_embedding"] < 1e-4 and report["max_abs_diff_logits"] < 1e-3
    assert load_embedder("perch", str(onnx_out)).format == "onnx"


def test_perch_is_found_among_the_attached_inputs_and_named_in_one_line_when_missing(saved_model, tmp_path,
                                                                                     monkeypatch):
    import shutil

    monkeypatch.setenv("BIRDCLEF_EMBEDDERS", str(tmp_path / "none"))
    monkeypatch.setenv("BIRDCLEF_INPUT_ROOT", str(tmp_path / "empty"))
    with pytest.raises(EmbedderError, match=r"Perch: no model found .*attach Perch v2") as info:
        load_embedder("perch", "")
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    mount = tmp_path / "input" / "models" / "google" / "bird-vocalization-classifier" / "tensorflow2" / "perch_v2_cpu"
    shutil.copytree(saved_model, mount / "1")
    monkeypatch.setenv("BIRDCLEF_INPUT_ROOT", str(tmp_path / "input"))
    found = load_embedder("perch", "")
    assert found.format == "savedmodel" and found.labels == LABELS
    with pytest.raises(EmbedderError, match="not a TensorFlow SavedModel"):
        load_embedder("perch", str(tmp_path))  # a folder without saved_model.pb


def test_perchs_own_logits_teach_as_a_member_and_as_a_loops_round_zero(saved_model, tmp_path):
    """Perch's logits are no linear map of its embedding: the teacher member gets a front end that keeps the model's
    logits per row, mapped onto the competition's classes by scientific name; the loop's round 0 takes it by
    ``perch:<path>``."""
    import predict
    from training.config import load_config
    from training.pseudo_pool import predict_pool, soft_targets, teacher_members

    folder = tmp_path / "birdclef"
    (folder / "test_soundscapes").mkdir(parents=True)
    pd.DataFrame(columns=["row_id", "amerob", "norcar", "zzzfake"]).to_csv(folder / "sample_submission.csv",
                                                                         index=False)
    (folder / "taxonomy.csv").write_text("primary_label,scientific_name\namerob,Turdus migratorius\n"
                                         "norcar,Cardinalis cardinalis\nzzzfake,Nonexistens fictus\n")
    rng = np.random.default_rng(3)
    audio = (rng.standard_normal(10 * 32000) * np.repeat(rng.uniform(0.01, 0.5, 40), 8000)).astype(np.float32)
    sf.write(folder / "test_soundscapes" / "s1.ogg", audio, 32000, format="OGG", subtype="VORBIS")
    out = tmp_path / "sub.csv"
    assert predict.main(["--checkpoint", f"teacher:perch:{saved_model}", "--audio-dir",
                         str(folder / "test_soundscapes"), "--out", str(out)]) == 0
    sub = pd.read_csv(out)
    assert list(sub["row_id"]) == ["s1_5", "s1_10"] and (sub["zzzfake"] == 0).all()
    decoded, _ = sf.read(folder / "test_soundscapes" / "s1.ogg", dtype="float32")
    _, logits = reference(decoded[:SAMPLES * 2].reshape(2, SAMPLES))
    want = 1 / (1 + np.exp(-logits[:, :2]))  # amerob, norcar = the first two labels
    np.testing.assert_allclose(sub[["amerob", "norcar"]].to_numpy(), want, atol=2e-3)  # float16 features

    cfg = load_config(None, [f"self_training.teacher=perch:{saved_model}"])
    members = teacher_members(cfg)
    assert members == [f"teacher:perch:{saved_model}"]
    frame, predicted = predict_pool(members, [folder / "test_soundscapes" / "s1.ogg"], ["amerob", "norcar", "zzzfake"],
                                    folder, 5.0)
    assert predicted == ["amerob", "norcar"]
    targets = soft_targets(frame, 1.0, 1.0, predicted)
    assert targets["zzzfake"].isna().all() and targets["amerob"].notna().all()  # unpredicted: left out, not 0
