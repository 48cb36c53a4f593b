"""The front-end object: frames from seconds, windows (exact, short, odd-length, context), and the same values
for a cached training window and the predictor's window of the same file."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from dataloader.features import WaveformSettings, crop_window, frontend_of_checkpoint, list_input_kinds, make_frontend
from dataloader.mel import DB_FLOOR
from dataloader.standardize import Standardizer
from utils.config_schema import DataProcessConfig


def test_frames_for_seconds_are_whole_hop_aligned_frames():
    mel = make_frontend(DataProcessConfig())  # 32 kHz, hop 500: 64 frames per second
    assert mel.frames_per_second == 64.0
    assert (mel.frames_for(5.0), mel.frames_for(10.0), mel.frames_for(0.5)) == (320, 640, 32)
    assert mel.whole_frames(5.0) and not make_frontend(DataProcessConfig(hop_length=512)).whole_frames(5.0)
    assert mel.seconds(320) == 5.0 and mel.seconds(1) == 0.016
    wave = make_frontend(WaveformSettings())  # 16 kHz samples
    assert (wave.kind, wave.rows, wave.frames_for(5.0), wave.pad_value) == ("waveform", 1, 80000, 0.0)
    assert (mel.kind, mel.rows, mel.pad_value) == ("mel", 128, DB_FLOOR)
    assert set(list_input_kinds()) >= {"mel", "waveform"}


def test_a_window_inside_is_a_slice_and_a_short_one_repeats_or_pads_with_silence():
    x = np.arange(6, dtype=np.float16).reshape(2, 3)  # an odd-length recording of 3 frames
    assert np.shares_memory(crop_window(x, 0, 3, "repeat", -9.0), x)  # inside: the stored slice itself
    assert crop_window(x, 1, 2, "repeat", -9.0).tolist() == [[1, 2], [4, 5]]
    assert crop_window(x, 0, 7, "repeat", -9.0).tolist() == [[0, 1, 2, 0, 1, 2, 0], [3, 4, 5, 3, 4, 5, 3]]
    assert crop_window(x, 0, 5, "silence", -9.0).tolist() == [[0, 1, 2, -9, -9], [3, 4, 5, -9, -9]]
    # a last partial chunk loops its own tail, not the recording's start
    assert crop_window(x, 2, 4, "repeat", -9.0).tolist() == [[2, 2, 2, 2], [5, 5, 5, 5]]


def test_a_context_window_is_centred_and_padded_with_silence_before_and_after():
    x = np.arange(10, dtype=np.float32)[None, :].repeat(2, axis=0)
    assert crop_window(x, -2, 6, "silence", -100.0)[0].tolist() == [-100, -100, 0, 1, 2, 3]
    assert crop_window(x, -2, 6, "repeat", -100.0)[0].tolist() == [-100, -100, 0, 1, 2, 3]  # before 0: silence
    assert crop_window(x, 7, 6, "silence", -100.0)[0].tolist() == [7, 8, 9, -100, -100, -100]
    frontend = make_frontend(DataProcessConfig(n_mels=2))
    rows = frontend.windows(x, 3, 4, Standardizer.identity(2), frames=6)  # rows of 4 frames, inputs of 6
    assert rows[:, 0, 0].tolist() == [[-100, 0, 1, 2, 3, 4], [3, 4, 5, 6, 7, 8], [7, 8, 9, -100, -100, -100]]


def test_windows_of_a_file_are_exactly_its_single_windows():
    rng = np.random.default_rng(0)
    features = rng.normal(-40, 10, (8, 23)).astype(np.float16)  # 4 whole windows of 5 frames and a partial one
    st = Standardizer("per_frequency", rng.normal(-40, 1, 8).astype(np.float32), rng.uniform(5, 9, 8).astype(np.float32))
    frontend = make_frontend(DataProcessConfig(n_mels=8))
    for pad_mode in ("repeat", "silence"):
        batch = frontend.windows(features, 5, 5, st, pad_mode=pad_mode)
        single = np.stack([frontend.window(features, 5 * k, 5, st, pad_mode=pad_mode) for k in range(5)])
        np.testing.assert_array_equal(batch[:, 0], single)
    assert frontend.window(features, 0, 5, st).dtype == np.float32


def test_the_predictor_computes_the_cached_values_of_a_file(tmp_path):
    from dataloader.preprocess import build_cache

    audio = np.random.default_rng(1).normal(0, 0.1, 44100 * 7).astype(np.float32)
    path = tmp_path / "rec.ogg"
    sf.write(path, audio, 44100, format="OGG", subtype="VORBIS")  # resampled to 32 kHz on the way
    for settings in (DataProcessConfig(), WaveformSettings()):
        frontend = make_frontend(settings)
        cached = build_cache(pd.DataFrame({"path": [str(path)]}), frontend, tmp_path / "cache").table
        stored = np.load(cached["entry"][0])
        computed, seconds = frontend.features(path)
        assert stored.dtype == computed.dtype == np.float16 and seconds == pytest.approx(7.0)
        np.testing.assert_array_equal(stored, computed)


def test_old_checkpoints_rebuild_their_front_end():
    from utils.checkpoints import ModelMeta

    base = {"labels": ["a"], "model_name": "m", "window_s": 5.0, "standardizer": {"mode": "none"}}
    meta = ModelMeta.from_payload({**base, "data_process": {**vars(DataProcessConfig(n_mels=64)),
                                                              "stats_max_files": 100}})
    frontend = frontend_of_checkpoint(meta)  # no "input": a mel checkpoint; a retired key is left out
    assert (frontend.kind, frontend.rows) == ("mel", 64)
    wave = frontend_of_checkpoint(ModelMeta.from_payload({**base, "data_process": vars(WaveformSettings()),
                                                          "input": "waveform"}))
    assert wave.frames_for(1.0) == 16000
