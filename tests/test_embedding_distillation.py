"""Embedding distillation (issue 25): a CNN student regresses a foundation model's embedding of each training row
through a projection used in training only; the exported network is the plain one."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from factory.distillation import EmbeddingRegressionLoss, EmbeddingStudent, inference_network
from factory.losses import create_loss
from factory.models import create_model


@pytest.mark.parametrize("name,in_chans", [("tiny_dscnn", 1), ("mobilenetv3_small_050", 3)])
def test_the_student_gives_logits_and_a_projection_in_training_and_the_plain_network_in_evaluation(name, in_chans):
    torch.manual_seed(0)
    network = create_model(name, num_classes=5, in_chans=in_chans, drop_rate=0.5)
    student = EmbeddingStudent(network, dim=7)
    x = torch.randn(3, 1, 32, 64)
    out = student.train()(x)
    assert out.shape == (3, 5 + 7)
    out[:, 5:].sum().backward()  # the regression reaches the trunk through the pooled features
    assert student.projection.weight.grad.abs().sum() > 0
    trunk = [p for n, p in network.named_parameters() if "classifier" not in n]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trunk)
    student.eval()
    with torch.no_grad():
        np.testing.assert_allclose(student(x).numpy(), network(x).numpy(), atol=1e-6)
    assert inference_network(student) is network and inference_network(network) is network
    assert set(inference_network(student).state_dict()) == set(create_model(name, 5, in_chans).state_dict())


def test_a_network_without_pooled_features_is_refused_in_one_line():
    with pytest.raises(ValueError, match="forward_features / forward_head"):
        EmbeddingStudent(torch.nn.Linear(4, 2), dim=3)


def test_the_regression_term_leaves_mixed_rows_out_and_validation_is_the_base_loss():
    base = create_loss("ce")
    loss = EmbeddingRegressionLoss(base, outputs=3, dim=2, weight=0.5)
    assert loss.activation == base.activation == "softmax"
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    assert loss(logits, labels) == base(logits, labels)  # validation: the network's logits, the labels alone
    projection = torch.tensor([[1.0, 1.0], [5.0, 5.0]])
    embedding = torch.tensor([[0.0, 3.0], [float("nan"), float("nan")]])  # row 2 was mixed: no embedding of its own
    total = loss(torch.cat([logits, projection], 1), torch.cat([labels, embedding], 1))
    expected = base(logits, labels) + 0.5 * ((1 - 0) ** 2 + (1 - 3) ** 2) / 2
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    nothing = torch.full((2, 2), float("nan"))
    assert float(loss(torch.cat([logits, projection], 1), torch.cat([labels, nothing], 1))) == pytest.approx(
        float(base(logits, labels)), rel=1e-6)


@pytest.mark.parametrize("what", ["mixup", "cutmix", "soundscape"])
def test_an_input_mixed_with_another_forgets_its_embedding_and_the_others_keep_theirs(what):
    from dataloader.augment import BatchAugment
    from utils.config_schema import AugmentationConfig

    aug = AugmentationConfig(augment_add_noise=False, augment_spec_augment=False, augment_gain=False,
                             augment_mixup=what == "mixup", mixup_prob=0.5, augment_cutmix=what == "cutmix",
                             cutmix_prob=0.5, augment_soundscape_mix=what == "soundscape", soundscape_mix_prob=0.5)
    chunks = (lambda n: (torch.zeros(n, 1, 4, 16), torch.zeros(n, 3))) if what == "soundscape" else None
    augment = BatchAugment(aug, chunks=chunks, embedding_columns=2)
    torch.manual_seed(1)
    x = torch.randn(64, 1, 4, 16)
    y = torch.cat([torch.eye(3)[torch.arange(64) % 3], torch.randn(64, 2)], 1)
    ax, ay = augment(x.clone(), y.clone())
    changed = (ax != x).flatten(1).any(dim=1)
    assert 10 < int(changed.sum()) < 54
    forgotten = torch.isnan(ay[:, 3:]).all(dim=1)
    assert forgotten[changed].all()  # every mixed input (one drawn with itself as partner stays unchanged)
    assert int(forgotten.sum()) < 54
    torch.testing.assert_close(ay[~forgotten], y[~forgotten])
    assert not torch.isnan(ay[:, :3]).any()


def test_teacher_embeddings_are_the_cached_rows_standardised_and_an_unreadable_file_learns_none(tmp_path, caplog):
    from dataloader.embedding_input import embedding_settings
    from dataloader.features import make_frontend
    from training.teacher_targets import teacher_embeddings

    caplog.set_level("INFO", logger="training.teacher_targets")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(3):
        t = np.arange(12 * 48000) / 48000
        audio = 0.2 * np.sin(2 * np.pi * (1500 + 700 * k) * t) * (rng.random(t.size) > 0.3) + 0.01 * rng.normal(
            size=t.size)
        paths.append(str(tmp_path / f"r{k}.wav"))
        sf.write(paths[-1], audio.astype(np.float32), 48000)
    (tmp_path / "bad.ogg").write_bytes(b"not audio")
    # rows: a whole recording, the window at frame 320 (the 2nd 5-s row at 320 frames per row), the bad file
    table = pd.DataFrame({"path": [paths[0], paths[1], paths[2], str(tmp_path / "bad.ogg")],
                          "start": [np.nan, 320, 0, np.nan]})
    out = teacher_embeddings(table, "birdnet", 5.0, 320, tmp_path / "cache")
    assert out.shape == (4, 1024) and out.dtype == np.float32
    assert np.isnan(out[3]).all() and "bad.ogg gives no embedding" in caplog.text
    frontend = make_frontend(embedding_settings("birdnet", "", 5.0))
    raw = [frontend.features(p)[0].astype(np.float32) for p in paths]  # (1024, 3 rows) each, as the cache holds
    expected = np.stack([raw[0].mean(axis=1), raw[1][:, 1], raw[2][:, 0]])
    std = expected.std(axis=0)
    np.testing.assert_allclose(out[:3], (expected - expected.mean(axis=0)) / np.where(std > 0, std, 1), atol=2e-2)
    caplog.clear()
    again = teacher_embeddings(table, "birdnet", 5.0, 320, tmp_path / "cache")
    np.testing.assert_array_equal(again, out)
    assert "(0 embedded now, 4 from the cache" in caplog.text


def test_a_training_run_regresses_birdnet_and_saves_the_plain_network(run, tmp_path):
    import train_classifier
    from factory.families import model_from_checkpoint
    from utils.checkpoints import load_checkpoint

    args = run["args"] + [f"--set=paths.runs_dir={tmp_path / 'runs'}", "--set=agent.distill_embedding=birdnet",
                          "--set=agent.distill_embedding_weight=2.0"]
    assert train_classifier.main(args) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    log = (run_dir / "train.log").read_text()
    assert "embedding distillation: birdnet embeddings (1024 dimensions, standardised)" in log
    payload = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert "projection.weight" in payload["model_train"] and not any("projection" in k for k in payload["model"])
    network = model_from_checkpoint(payload)  # strict load: the plain network, rebuilt from the checkpoint alone
    assert not isinstance(network, EmbeddingStudent)
    summary = (run_dir / "summary.json").read_text()
    assert '"soundscape_score"' in summary


def test_resume_restores_the_projection_with_the_network():
    from torch.utils.data import DataLoader, TensorDataset

    from training.trainer import Trainer

    def trainer() -> Trainer:
        torch.manual_seed(0)
        student = EmbeddingStudent(create_model("tiny_dscnn", num_classes=3), dim=4)
        return Trainer(student, EmbeddingRegressionLoss(create_loss("bce"), 3, 4, 1.0),
                       torch.optim.SGD(student.parameters(), lr=0.1), None, torch.device("cpu"), ["a", "b", "c"])

    data = TensorDataset(torch.randn(8, 1, 16, 32), torch.cat([torch.ones(8, 3), torch.randn(8, 4)], 1))
    loader = DataLoader(data, batch_size=4)
    first = trainer()
    first.train_epoch(loader, 1)
    payload = first.checkpoint_payload(1, {})
    second = trainer()
    assert second.resume(payload, loader) == 2
    for k, v in first.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[k], v)
    assert not torch.equal(second.model.projection.weight, trainer().model.projection.weight)
