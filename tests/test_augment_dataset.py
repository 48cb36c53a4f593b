"""Dataset crops and batch augmentation."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dataloader.augment import BatchAugment
from dataloader.dataset import WindowDataset, multi_hot
from dataloader.features import make_frontend
from dataloader.standardize import Standardizer
from training.config import AugmentationConfig
from utils.config_schema import DataProcessConfig

ROOT = Path(__file__).resolve().parents[1]


def test_targets_are_primary_one_and_secondary_weighted():
    table = pd.DataFrame({"primary_label": ["a", "b"], "secondary_labels": [["b", "zz"], []]})
    y = multi_hot(table, ["a", "b", "c"], secondary_weight=0.5)
    assert y.tolist() == [[1.0, 0.5, 0.0], [0.0, 1.0, 0.0]]
    assert multi_hot(table, ["a", "b", "c"], 0.0).tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_random_crops_are_whole_windows_from_anywhere_and_first_is_fixed(tmp_path):
    mel = np.tile(np.arange(1000, dtype=np.float16), (4, 1))
    np.save(tmp_path / "m.npy", mel)
    targets = np.ones((1, 2), dtype=np.float32)
    frontend = make_frontend(DataProcessConfig(n_mels=4))
    rand = WindowDataset([str(tmp_path / "m.npy")], targets, frontend, 320, "random", "repeat", Standardizer.identity(4))
    starts = {int(rand[0][0][0, 0, 0]) for _ in range(30)}
    assert len(starts) > 10 and max(starts) <= 680
    x, y = rand[0]
    assert x.shape == (1, 4, 320) and x.dtype == torch.float32 and y.tolist() == [1.0, 1.0]
    first = WindowDataset([str(tmp_path / "m.npy")], targets, frontend, 320, "first", "repeat", Standardizer.identity(4))
    assert {int(first[0][0][0, 0, 0]) for _ in range(5)} == {0}


def test_overlay_keeps_both_calls_and_unites_labels():
    torch.manual_seed(0)
    aug = BatchAugment(AugmentationConfig(augment_add_noise=False, augment_spec_augment=False, augment_mixup=True,
                                          mixup_prob=1.0))
    x = torch.full((4, 1, 8, 10), -1.0)
    x[0, 0, 2] = 3.0  # a call in row 2 of example 0
    y = torch.eye(4)
    mx, my = aug(x.clone(), y.clone())
    partner_of_0 = [i for i in range(4) if mx[i, 0, 2].eq(3.0).all() and i != 0]
    for i in partner_of_0:
        assert my[i, 0] == 1.0 and my[i, i] == 1.0  # the overlaid call and the label arrive together
    assert (mx >= x).all() and (my >= y).all()


def test_spec_augment_masks_bands_and_disabled_is_identity():
    torch.manual_seed(0)
    cfg = AugmentationConfig(augment_add_noise=False, augment_mixup=False, freq_mask_max=4, time_mask_max=8,
                             n_masks=2)
    x = torch.randn(8, 1, 32, 64)
    out, _ = BatchAugment(cfg)(x.clone(), torch.zeros(8, 3))
    changed = (out != x)
    assert changed.any() and not changed.all()
    off = AugmentationConfig(data_augmentation=False)
    same, _ = BatchAugment(off)(x.clone(), torch.zeros(8, 3))
    assert torch.equal(same, x)


def test_inference_path_imports_nothing_from_training():
    code = ("import sys, predict, inference.predict, inference.submission, inference.backends; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('neptune', 'kaggle') "
            "or m in ('training.trainer', 'training.callbacks', 'factory.optimizers', 'factory.schedulers', "
            "'factory.losses')]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gain_shifts_each_bin_by_its_units_per_db():
    cfg = AugmentationConfig(augment_add_noise=False, augment_spec_augment=False, augment_mixup=False,
                             augment_gain=True, gain_db=6.0)
    units = np.array([0.5, 0.1, 0.0], dtype=np.float32)  # per-bin 1/std; 0 = level-invariant bin
    x = torch.zeros(16, 1, 3, 5)
    out, _ = BatchAugment(cfg, units)(x, torch.zeros(16, 2))
    shift = out[:, 0, :, 0]  # (batch, bins): constant over time
    assert torch.allclose(out, shift[:, None, :, None].expand_as(out))
    db = shift[:, 0] / 0.5
    assert db.abs().max() <= 6.0 and db.std() > 1.0
    torch.testing.assert_close(shift[:, 1], db * 0.1)
    assert shift[:, 2].eq(0).all()


def test_cpu_training_augments_batches_in_the_loader_workers(tmp_path):
    from dataloader.loaders import make_loaders
    from training.config import Config

    cfg = Config()
    cfg.trainer.num_workers, cfg.trainer.batch_size, cfg.data.crop = 1, 4, "first"
    rows = []
    for i in range(8):
        np.save(tmp_path / f"{i}.npy", np.full((8, 40), float(i), dtype=np.float16))
        rows.append({"entry": str(tmp_path / f"{i}.npy"), "primary_label": f"c{i % 2}", "secondary_labels": []})
    table = pd.DataFrame(rows)
    aug = BatchAugment(AugmentationConfig(augment_gain=False, augment_spec_augment=False, augment_mixup=False,
                                          noise_std=0.5))
    frontend = make_frontend(DataProcessConfig(n_mels=8, hop_length=5000))  # 5-s windows of 32 frames
    plain, _ = make_loaders(table, table, ["c0", "c1"], cfg.data, cfg.trainer, frontend, Standardizer.identity(8))
    noisy, _ = make_loaders(table, table, ["c0", "c1"], cfg.data, cfg.trainer, frontend, Standardizer.identity(8),
                            augment=aug)
    assert not plain.pin_memory  # page-locked batches only when training on CUDA (run_loaders asks for them)
    pinned = make_loaders(table, table, ["c0", "c1"], cfg.data, cfg.trainer, frontend, Standardizer.identity(8),
                          pin_memory=True)
    assert all(loader.pin_memory for loader in pinned)
    # a compiled model (static shapes): the last partial batch is dropped, unless the set is under one batch
    for batch, dropped, n_batches in ((3, True, 2), (16, False, 1)):
        trainer = dataclasses.replace(cfg.trainer, num_workers=0, batch_size=batch)
        train, val = make_loaders(table, table, ["c0", "c1"], cfg.data, trainer, frontend, Standardizer.identity(8),
                                  drop_last=True)
        assert (train.drop_last, len(train), len(list(train))) == (dropped, n_batches, n_batches)
        assert not val.drop_last  # every validation window is scored
    x0, y0 = next(iter(plain))
    x1, y1 = next(iter(noisy))
    assert x1.shape == x0.shape and torch.equal(y0, y1)
    assert 0.3 < (x1 - x0).std() < 0.7  # the workers added the configured noise


def test_cutmix_takes_a_time_span_from_a_partner_and_mixes_labels_by_its_share():
    torch.manual_seed(0)
    cfg = AugmentationConfig(augment_gain=False, augment_add_noise=False, augment_spec_augment=False,
                             augment_mixup=False, augment_cutmix=True, cutmix_prob=1.0, cutmix_max_fraction=0.5)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 3, 100).clone()
    y = torch.eye(4)
    out, my = BatchAugment(cfg)(x.clone(), y.clone())
    for i in range(4):
        values = out[i, 0, 0].unique().tolist()
        assert float(i) in values and len(values) <= 2  # own content plus at most one partner's span
        share = (out[i, 0, 0] != i).float().mean().item()
        assert share <= 0.5 and my[i, i] == pytest.approx(1 - share, abs=1e-6)
        assert my[i].sum() == pytest.approx(1.0, abs=1e-6)


def test_background_windows_are_overlaid_without_changing_targets():
    from dataloader.augment import BackgroundBank

    cfg = AugmentationConfig(augment_gain=False, augment_add_noise=False, augment_spec_augment=False,
                             augment_mixup=False, augment_background=True, background_prob=1.0, background_gain_db=0)

    class Loud:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.full((1, 4, 10), 5.0), torch.zeros(0)

    x, y = torch.zeros(6, 1, 4, 10), torch.eye(6)[:, :2]
    out, my = BatchAugment(cfg, np.ones(4, np.float32), background=BackgroundBank(Loud()))(x, y.clone())
    assert torch.equal(out, torch.full_like(out, 5.0)) and torch.equal(my, y)


def test_waveform_batches_overlay_by_adding_samples_and_mask_10_ms_units_with_silence():
    from dataloader.features import WaveformSettings

    frontend = make_frontend(WaveformSettings())
    assert frontend.mask_time_unit == 160 and make_frontend(DataProcessConfig()).mask_time_unit == 1
    torch.manual_seed(0)
    mix = BatchAugment(AugmentationConfig(augment_gain=False, augment_add_noise=False, augment_spec_augment=False,
                                          augment_mixup=True, mixup_prob=1.0), ops=frontend.augment_ops())
    x = torch.stack([torch.full((1, 1, 800), float(i + 1)) for i in range(4)])
    mx, _ = mix(x.clone(), torch.eye(4))
    assert all(mx[i, 0, 0, 0].item() - (i + 1) in (1, 2, 3, 4) for i in range(4))  # its own samples + a partner's
    masks = BatchAugment(AugmentationConfig(augment_gain=False, augment_add_noise=False, augment_mixup=False,
                                            time_mask_max=2, n_masks=1), ops=frontend.augment_ops(),
                         time_unit=frontend.mask_time_unit)
    out, _ = masks(torch.ones(64, 1, 1, 800), torch.zeros(64, 1))
    silenced = (out == 0).sum(dim=3).flatten()
    assert set(out.unique().tolist()) <= {0.0, 1.0} and silenced.max() > 160 and silenced.max() <= 320
    assert make_frontend(DataProcessConfig()).augment_ops().__name__ == "MelOps"  # the front end says its ops


def test_mixup_follows_the_task_unless_set_and_the_resolved_config_says_which():
    from training.config import load_config, to_ini

    assert load_config(None).augmentation.mixup_kind == "overlay"  # multilabel: species overlap
    multiclass = load_config(None, ["data.task=multiclass", "agent.loss=ce"])
    assert multiclass.augmentation.mixup_kind == "beta" and "mixup_kind = beta" in to_ini(multiclass)
    assert load_config(None, ["data.task=binary"]).augmentation.mixup_kind == "beta"
    chosen = load_config(None, ["data.task=multiclass", "agent.loss=ce", "augmentation.mixup_kind=overlay"])
    assert chosen.augmentation.mixup_kind == "overlay"  # the user's choice stays


def test_beta_mixup_mixes_one_hot_targets_convexly_with_the_clip_as_the_larger_part():
    torch.manual_seed(0)
    aug = BatchAugment(AugmentationConfig(augment_gain=False, augment_add_noise=False, augment_spec_augment=False,
                                          augment_mixup=True, mixup_prob=1.0, mixup_kind="beta", mixup_alpha=0.4))
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone()
    y = torch.eye(4)
    mx, my = aug(x.clone(), y.clone())
    assert torch.allclose(my.sum(dim=1), torch.ones(4)) and (my.diagonal() >= 0.5).all()
    assert torch.allclose(mx[:, 0, 0, 0], my @ torch.arange(4.0), atol=1e-5)  # inputs mixed as the targets are
