"""The front end (hop-aligned frames, fixed dB floor, standardisation) and the mel cache."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from dataloader.audio import AudioError, load_audio
from dataloader.mel import MelTransform
from dataloader.preprocess import build_cache, cache_key
from dataloader.standardize import Standardizer, StatsAccumulator
from training.config import DataProcessConfig, load_config


def tone(seconds: float, sr: int = 32000, freq: float = 3000.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_frames_are_hop_aligned_whole_windows():
    fe = MelTransform.from_config(DataProcessConfig())
    assert fe.frames_for(5.0) == 320
    mel = fe(tone(10.0))
    assert mel.shape == (128, 10 * 32000 // 500 + 1)


def test_db_uses_a_fixed_floor_not_a_per_file_reference():
    fe = MelTransform.from_config(DataProcessConfig())
    loud, quiet = fe(tone(2.0)), fe(tone(2.0) * 0.1)
    assert loud.max() - quiet.max() == pytest.approx(20.0, abs=0.1)  # 20 dB quieter stays 20 dB quieter
    assert fe(np.zeros(32000, dtype=np.float32)).max() == pytest.approx(-100.0)


@pytest.mark.parametrize("n_fft, hop", [(1024, 500), (512, 500), (2048, 320)])
def test_front_end_equals_torchaudio_melspectrogram_in_db(n_fft, hop):
    torch = pytest.importorskip("torch")
    torchaudio = pytest.importorskip("torchaudio")
    fe = MelTransform(32000, n_fft, hop, 64, 50.0, 14000.0)
    ta = torchaudio.transforms.MelSpectrogram(32000, n_fft=n_fft, hop_length=hop, n_mels=64, f_min=50.0,
                                              f_max=14000.0, norm="slaney", mel_scale="slaney")
    to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)
    np.testing.assert_allclose(fe.filters, torchaudio.functional.melscale_fbanks(
        n_fft // 2 + 1, 50.0, 14000.0, 64, 32000, norm="slaney", mel_scale="slaney").numpy(), atol=1e-6)
    rng = np.random.default_rng(n_fft)
    for n in (n_fft // 2 + 1, n_fft + 3, 3 * n_fft + hop // 2, 32000 * 4 + 123):  # ends and interior split
        x = (0.1 * rng.standard_normal(n)).astype(np.float32)
        ours, theirs = fe(x), to_db(ta(torch.from_numpy(x))).numpy()
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, atol=2e-3)  # dB; float32 FFTs of different libraries


def test_per_frequency_standardisation_centres_each_bin():
    rng = np.random.default_rng(0)
    mels = [rng.normal(loc=np.linspace(-80, -20, 16)[:, None], scale=5.0, size=(16, 400)) for _ in range(3)]
    acc = StatsAccumulator(16)
    for m in mels:
        acc.add(m)
    std = Standardizer.fit("per_frequency", acc)
    z = std(np.concatenate(mels, axis=1))
    assert np.abs(z.mean(axis=1)).max() < 1e-4 and np.abs(z.std(axis=1) - 1).max() < 1e-3
    again = Standardizer.from_dict(json.loads(json.dumps(std.to_dict())))
    np.testing.assert_allclose(again(mels[0]), std(mels[0]), atol=1e-6)


def test_load_audio_converts_rate_and_channels(tmp_path):
    stereo = np.stack([tone(1.0, 44100), tone(1.0, 44100)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 44100)
    audio = load_audio(tmp_path / "s.wav", 32000)
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(audio.size - 32000) <= 1


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b"OggS" + b"\0" * 100), "unreadable"),
    (lambda p: None, "missing"),
])
def test_bad_audio_raises_a_reason(tmp_path, make, reason):
    path = tmp_path / "bad.ogg"
    make(path)
    with pytest.raises(AudioError, match=reason):
        load_audio(path, 32000)


def recordings(folder, n: int = 4) -> pd.DataFrame:
    paths = []
    for i in range(n):
        path = folder / f"r{i}.ogg"
        sf.write(path, tone(2.0 + i, freq=1000.0 * (i + 1)), 32000, format="OGG", subtype="VORBIS")
        paths.append(str(path))
    return pd.DataFrame({"path": paths, "primary_label": ["a", "b"] * (n // 2), "secondary_labels": [[]] * n,
                         "group": [f"g{i}" for i in range(n)], "filename": [f"r{i}.ogg" for i in range(n)]})


def test_a_second_run_decodes_nothing_and_a_changed_setting_rebuilds(tmp_path, monkeypatch):
    table = recordings(tmp_path)
    dp = DataProcessConfig()
    first = build_cache(table, dp, tmp_path / "cache", workers=1)
    assert (first.decoded, first.reused, len(first.table)) == (4, 0, 4)
    entry = np.load(first.table["entry"][0])
    assert entry.dtype == np.float16 and entry.shape[0] == 128

    import dataloader.preprocess as pre

    monkeypatch.setattr(pre, "MonoReader", lambda *a, **k: pytest.fail("decoded on a cache hit"))
    second = build_cache(table, dp, tmp_path / "cache", workers=1)
    assert (second.decoded, second.reused) == (0, 4)
    assert second.table["entry"].tolist() == first.table["entry"].tolist()
    monkeypatch.undo()

    changed = DataProcessConfig(n_mels=64)
    assert cache_key(changed) != cache_key(dp)
    third = build_cache(table, changed, tmp_path / "cache", workers=1)
    assert third.decoded == 4 and np.load(third.table["entry"][0]).shape[0] == 64


@pytest.mark.parametrize("key, value", [("n_mels", 64), ("hop_length", 320), ("sample_rate", 16000), ("f_min", 0.0),
                                        ("f_max", 12000.0), ("n_fft", 2048), ("mode", "single"),
                                        ("max_length_s", 30.0)])
def test_each_data_process_key_changes_the_cache_key(key, value):
    assert cache_key(DataProcessConfig(**{key: value})) != cache_key(DataProcessConfig())
    assert cache_key(DataProcessConfig()) == cache_key(DataProcessConfig())  # stable


def test_training_only_keys_do_not_change_the_cache_key():
    base = load_config(None)
    other = load_config(None, ["trainer.batch_size=8", "agent.lr_warmup_end=0.1", "model.type=resnet18",
                               "data_process.normalization=global"])
    assert cache_key(base.data_process) == cache_key(other.data_process)  # normalisation is applied when read


def test_added_recordings_are_the_only_ones_decoded_and_bad_files_are_skipped(tmp_path):
    table = recordings(tmp_path)
    build_cache(table.iloc[:2], DataProcessConfig(), tmp_path / "cache", workers=1)
    (tmp_path / "broken.ogg").write_bytes(b"not audio at all")
    extra = pd.DataFrame({"path": [str(tmp_path / "broken.ogg"), str(tmp_path / "gone.ogg")],
                          "primary_label": ["a", "b"], "secondary_labels": [[], []], "group": ["x", "y"],
                          "filename": ["broken.ogg", "gone.ogg"]})
    result = build_cache(pd.concat([table, extra], ignore_index=True), DataProcessConfig(), tmp_path / "cache",
                         workers=1)
    assert result.decoded == 3 and len(result.table) == 4
    reasons = dict(zip(result.skipped["path"], result.skipped["reason"]))
    assert reasons[str(tmp_path / "gone.ogg")] == "missing file"
    assert reasons[str(tmp_path / "broken.ogg")].startswith("unreadable")
    assert (result.folder / "skipped_files.csv").is_file()


def test_parallel_workers_give_the_same_cache(tmp_path):
    table = recordings(tmp_path, 4)
    one = build_cache(table, DataProcessConfig(), tmp_path / "c1", workers=1)
    two = build_cache(table, DataProcessConfig(), tmp_path / "c2", workers=2)
    for a, b in zip(one.table["entry"], two.table["entry"]):
        np.testing.assert_array_equal(np.load(a), np.load(b))
