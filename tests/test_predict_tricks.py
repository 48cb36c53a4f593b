"""predict.py's tricks against hand-computed values: windows per row (hop and shift TTA, cut from the file as the
rows are), peak scaling and smoothing, rank blending, site and hour priors, and the budget that times each."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.scoring_stand_ins import SR, competition, stand_in


def test_row_windows_shift_tta_and_row_hop_against_hand_computed_values():
    from inference.postprocess import RowWindows

    hop = RowWindows.hop(5.0, 2.5)
    assert hop.offsets == (-2.5, 0.0, 2.5) and hop.weights == (0.5, 1.0, 0.5)
    np.testing.assert_allclose(hop.starts(np.array([0.0, 5.0])), [-2.5, 0.0, 2.5, 2.5, 5.0, 7.5])
    windows = np.array([[0.2], [0.4], [0.8], [0.8], [0.6], [0.0]], dtype=np.float32)  # two rows, three windows each
    np.testing.assert_allclose(hop.combine(windows)[:, 0], [(0.1 + 0.4 + 0.4) / 2, (0.4 + 0.6 + 0.0) / 2])
    tta = RowWindows.shifts(1.0)
    assert tta.offsets == (-1.0, 0.0, 1.0)
    np.testing.assert_allclose(tta.combine(windows)[:, 0], [1.4 / 3, 1.4 / 3])
    assert RowWindows.hop(5.0, 0.0).count == 1 and RowWindows.shifts(0.0).count == 1
    with pytest.raises(ValueError, match="must divide"):
        RowWindows.hop(5.0, 2.0)


def test_peak_scaling_and_smoothing_against_hand_computed_values():
    from inference.postprocess import RowPostprocess, peak_scale

    probs = np.array([[0.1, 0.5], [0.9, 0.5], [0.3, 0.1]], dtype=np.float32)
    np.testing.assert_allclose(peak_scale(probs, 1.0), [[0.09, 0.25], [0.81, 0.25], [0.27, 0.05]], rtol=1e-6)
    np.testing.assert_allclose(peak_scale(probs, 0.5)[:, 1], np.array([0.5, 0.5, 0.1]) * np.sqrt(0.5), rtol=1e-6)
    assert peak_scale(probs, 0.0) is probs
    both = RowPostprocess(smooth=1, peak_power=1.0)(probs)  # smoothing first, then scaling by the smoothed maximum
    smoothed = np.array([[0.5, 0.5], [13 / 30, 11 / 30], [0.6, 0.3]])
    np.testing.assert_allclose(both, smoothed * smoothed.max(axis=0), rtol=1e-5)


def test_shifted_windows_are_cut_from_the_file_as_the_rows_are(tmp_path):
    """Each shifted window equals the window the plain pipeline cuts at that start (context before 0: silence)."""
    from inference.file_pipeline import file_chunks
    from inference.postprocess import RowWindows
    from inference.predict import SoundscapePredictor

    model = stand_in(tmp_path / "m.pt", ["a"])
    path = tmp_path / "f.wav"
    sf.write(path, (0.05 * np.random.default_rng(1).standard_normal(int(17.5 * SR))).astype(np.float32), SR)
    plain = SoundscapePredictor([model], batch_size=4)
    hop = SoundscapePredictor([model], batch_size=4, row_windows=RowWindows.hop(5.0, 2.5))
    _, chunks = file_chunks(hop, path)
    shifted = np.concatenate([w[0] for _, w in chunks])
    _, chunks = file_chunks(plain, path, hop_s=2.5)
    every = np.concatenate([w[0] for _, w in chunks])  # windows at 0, 2.5, ..., 12.5
    assert len(shifted) == 4 * 3
    np.testing.assert_array_equal(shifted[1], every[0])  # row 0's own window
    np.testing.assert_array_equal(shifted[2], every[1])  # row 0 + 2.5 s
    np.testing.assert_array_equal(shifted[3], every[1])  # row 1 - 2.5 s: the same window again
    np.testing.assert_array_equal(shifted[9], every[5])  # row 3 - 2.5 s (12.5 s), past the end padded as before


def test_rank_blending_against_hand_computed_values():
    from inference.predict import rank_blend

    # 4 rows, 2 members, 2 classes; member 1 does not predict class b
    m0 = np.array([[0.1, 0.9], [0.4, 0.1], [0.3, 0.5], [0.2, 0.3]])
    m1 = np.array([[0.01, np.nan], [0.02, np.nan], [0.04, np.nan], [0.03, np.nan]])
    stacked = np.stack([m0, m1], axis=1).reshape(4, 4)
    out = rank_blend(stacked, 2, [1.0, 3.0])
    rank_m0_a, rank_m1_a = np.array([0, 3, 2, 1]) / 3, np.array([0, 1, 3, 2]) / 3
    np.testing.assert_allclose(out[:, 0], (1 * rank_m0_a + 3 * rank_m1_a) / 4, rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], np.array([3, 0, 2, 1]) / 3, rtol=1e-6)  # member 0 alone


def test_a_rank_blended_submission_ranks_over_every_file(tmp_path):
    from inference.predict import SoundscapePredictor, predict_folder, rank_blend

    comp = competition(tmp_path / "birdclef-2025", files={"s1": 10.0, "s2": 15.0})
    models = [stand_in(tmp_path / "m0.pt", ["a", "b"]), stand_in(tmp_path / "m1.pt", ["a"], seed=1)]
    audio = comp / "test_soundscapes"
    ranked = predict_folder(SoundscapePredictor(models, blend="rank", weights=[2, 1]), audio, ["a", "b"])
    alone = [predict_folder(SoundscapePredictor([m]), audio, ["a", "b"]) for m in models]
    stacked = np.stack([alone[0][["a", "b"]].to_numpy(), np.c_[alone[1]["a"].to_numpy(), np.full(5, np.nan)]],
                       axis=1).reshape(5, 4)
    np.testing.assert_allclose(ranked[["a", "b"]].to_numpy(), rank_blend(stacked, 2, [2, 1]), atol=1e-6)
    assert list(ranked["row_id"]) == ["s1_5", "s1_10", "s2_5", "s2_10", "s2_15"]
    with pytest.raises(ValueError, match="one non-negative weight per member"):
        SoundscapePredictor(models, weights=[1.0])


def test_site_and_hour_priors_against_hand_computed_values(tmp_path):
    from inference.priors import SiteHourPriors

    rows = [("BC_Train_1_S01_20250101_060000.ogg", "00:00:00", "00:00:05", "a"),
            ("BC_Train_1_S01_20250101_060000.ogg", "00:00:00", "00:00:05", "a"),  # a duplicate row counts once
            ("BC_Train_1_S01_20250101_060000.ogg", "00:00:05", "00:00:10", "a;b"),
            ("BC_Train_2_S02_20250101_220000.ogg", "00:00:00", "00:00:05", "b")]
    table = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["filename", "start", "end", "primary_label"]).to_csv(table, index=False)
    priors = SiteHourPriors.from_labels(table, ["a", "b", "c"], strength=1.0, smoothing=1.0, hour_bin=3)
    overall = np.array([2 + 1, 2 + 1, 0 + 1]) / (3 + 2)  # 3 windows: a in 2, b in 2, c in none (+1 / +2)
    site1 = (np.array([2, 1, 0]) + overall) / (2 + 1) / overall  # S01: 2 windows, a in both, b in one
    np.testing.assert_allclose(priors.site_ratio["S01"], site1, rtol=1e-6)
    hour2 = (np.array([2, 1, 0]) + overall) / (2 + 1) / overall  # 06:00 -> bin 2, the same two windows
    np.testing.assert_allclose(priors.factor("BC_Test_9_S01_20250301_070000.ogg"), site1 * hour2, rtol=1e-5)
    assert (priors.factor("elsewhere.ogg") == 1).all()
    probs = np.array([[0.5, 0.5], [0.9, 0.1]], dtype=np.float32)
    out = priors.apply("BC_Test_9_S01_20250301_070000.ogg", probs, ["b", "zz"])  # zz: no prior
    np.testing.assert_allclose(out[:, 0], np.clip(probs[:, 0] * site1[1] * hour2[1], 0, 1), rtol=1e-5)
    np.testing.assert_allclose(out[:, 1], probs[:, 1])


def test_the_budget_times_each_trick_as_it_runs(tmp_path):
    """``inference.budget`` with predict.py's tricks: windows per row multiply the front end's and every member's
    windows (a 20-s member still counts 5-s rows), the per-file and per-folder tricks are a row of their own."""
    from inference.budget import frontend_seconds_per_row, plan, postprocess_seconds, priors_files
    from inference.postprocess import RowPostprocess, RowWindows
    from inference.priors import SiteHourPriors

    short = stand_in(tmp_path / "short.pt", ["a", "b", "c"])
    long = stand_in(tmp_path / "long.pt", ["a", "b", "c"], window_s=20.0, seed=1)
    hop = RowWindows.hop(5.0, 2.5)
    rows = plan([long, short], competition="birdclef-2026", files=1, row_windows=hop,
                post=RowPostprocess(smooth=1, peak_power=0.5), blend="rank")
    fronts, (first, second, tricks, verdict) = rows[:2], rows[2:]
    for front in fronts:  # a front end per input length: the 20-s member's windows are its own
        assert front["component"] == "decode+mel" and front["windows_per_row"] == 3
    for member in (first, second):  # 7,200 rows x 3 windows each at the member's measured pace
        assert member["windows_per_row"] == 3
        assert member["projected_minutes"] == pytest.approx(7200 * 3 / member["windows_per_s"] / 60, abs=0.06)
    assert tricks["component"] == "tricks: smoothing over ±1 rows; file peak scaling, power 0.5; rank blend"
    assert verdict["tricks"][0] == "3 windows per row at -2.5, +0, +2.5 s" and verdict["windows_per_row"] == 3
    assert verdict["projected_minutes"] == pytest.approx(tricks["cumulative_minutes"], abs=0.1)
    # the front end per row: a 20-s member cut at 5-s rows gives one row per 5 s, not per 20 s
    assert frontend_seconds_per_row(long, 1, 5.0) < 4 * frontend_seconds_per_row(short, 1, 5.0)
    table = tmp_path / "labels.csv"
    pd.DataFrame({"filename": ["BC2026_Train_0001_S01_20250101_013000.ogg"] * 2, "start": ["0", "5"],
                  "end": ["5", "10"], "primary_label": ["a", "a;b"]}).to_csv(table, index=False)
    priors = SiteHourPriors.from_labels(table, ["a", "b", "c"])
    assert [SiteHourPriors.factor(priors, name)[0] > 1 for name in priors_files(priors)] == [True]
    assert postprocess_seconds(4, 12, 3, 2, RowPostprocess(), "mean", priors) > 0
