"""Submission format: row ids, column order by name, the short final window, validation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inference.submission import (
    SubmissionError,
    n_windows,
    row_ids,
    to_submission_frame,
    validate_submission,
    write_submission,
)


@pytest.mark.parametrize("seconds, rows", [(240.0, 48), (240.05, 48), (39.25, 8), (4.0, 1), (0.05, 1), (12.3, 3)])
def test_rows_per_file_pad_the_last_window_and_ignore_decoder_padding(seconds, rows):
    assert n_windows(seconds) == rows


def test_row_ids_are_stem_and_end_second():
    assert row_ids("soundscape_1446779", 3) == ["soundscape_1446779_5", "soundscape_1446779_10", "soundscape_1446779_15"]


def test_columns_follow_the_sample_order_and_unseen_species_get_zero():
    probs = np.array([[0.1, 0.9], [0.3, 0.4]], dtype=np.float32)
    frame = to_submission_frame(["x_5", "x_10"], probs, model_labels=["zebfin", "asbfly"],
                                columns=["asbfly", "barswa", "zebfin"])
    assert list(frame.columns) == ["row_id", "asbfly", "barswa", "zebfin"]
    assert frame["asbfly"].tolist() == pytest.approx([0.9, 0.4])
    assert frame["barswa"].tolist() == [0.0, 0.0]
    assert frame["zebfin"].tolist() == pytest.approx([0.1, 0.3])
    validate_submission(frame, ["asbfly", "barswa", "zebfin"])


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f[["row_id", "b", "a"]], "columns"),
    (lambda f: f.assign(a=[np.nan, 0.1]), "NaN"),
    (lambda f: f.assign(a=[1.5, 0.1]), "outside"),
    (lambda f: f.assign(a=["x", "y"]), "non-numeric"),
    (lambda f: f.assign(row_id=["s_5", "s_5"]), "duplicate"),
])
def test_invalid_submissions_are_refused(mutate, message, tmp_path):
    good = pd.DataFrame({"row_id": ["s_5", "s_10"], "a": [0.2, 0.3], "b": [0.0, 1.0]})
    validate_submission(good, ["a", "b"])
    with pytest.raises(SubmissionError, match=message):
        write_submission(mutate(good), ["a", "b"], tmp_path / "sub.csv")
    assert not (tmp_path / "sub.csv").exists()


def test_smoothing_averages_each_window_with_its_neighbours():
    from inference.postprocess import smooth_windows

    probs = np.array([[0.0], [3.0], [0.0], [6.0]], dtype=np.float32)
    np.testing.assert_allclose(smooth_windows(probs, 1)[:, 0], [1.5, 1.0, 3.0, 3.0])
    assert smooth_windows(probs, 0) is probs


class SlowEnsemble:
    """A stand-in ensemble whose every model costs ``seconds`` per file (the clock guard only sees time): a real
    (small) mel front end cuts the windows, the models are a sleep, and each row says how many members scored it."""

    def __init__(self, models: int, seconds: float):
        from dataloader.features import make_frontend
        from dataloader.standardize import Standardizer
        from inference.clock_guard import WorkClock
        from inference.postprocess import RowWindows
        from inference.windows import InputGroup
        from utils.config_schema import DataProcessConfig

        frontend = make_frontend(DataProcessConfig(sample_rate=8000, n_fft=256, hop_length=80, n_mels=8,
                                                   f_min=50.0, f_max=4000.0))
        self.groups = [InputGroup(frontend, Standardizer.identity(8), "repeat", 500, 500)]
        self.models, self.seconds, self.clock = list(range(models)), seconds, WorkClock()
        self.labels, self.window_s, self.input_s, self.batch_size, self.smooth = ["asbfly"], 5.0, 5.0, 12, 0
        self.row_windows, self.post, self.blend = RowWindows(), (lambda probs: probs), "mean"

    def probabilities(self, windows):
        import time

        for k in range(len(self.models)):
            time.sleep(self.seconds)
            self.clock.add_member(k, self.seconds)
        return np.full((len(windows[0]), 1), 0.1 * len(self.models), dtype=np.float32)

    def member_groups(self):
        return [0] * len(self.models)

    def keep_members(self, count):
        self.models = self.models[:count]


def test_the_clock_guard_decides_on_the_first_files_and_one_ensemble_scores_every_file(tmp_path, caplog):
    import soundfile as sf

    from inference.predict import predict_folder

    for k in range(10):  # a minute each: 12 rows, one model call
        sf.write(tmp_path / f"sc_{k}.wav", np.zeros(60 * 8000, dtype=np.float32) + 0.01, 8000)
    predictor = SlowEnsemble(models=3, seconds=0.1)  # 0.3 s a file with all three: 3 s for 10 files
    frame = predict_folder(predictor, tmp_path, ["asbfly"], fill_value=0.0, budget_s=2.2)
    assert len(predictor.models) < 3 and "dropped members" in caplog.text
    assert frame["row_id"].str.rsplit("_", n=1).str[0].nunique() == 10 and len(frame) == 10 * 12
    assert frame["asbfly"].nunique() == 1 and frame["asbfly"].iloc[0] == pytest.approx(0.1 * len(predictor.models))

    caplog.clear()
    spent = predict_folder(SlowEnsemble(models=2, seconds=0.05), tmp_path, ["asbfly"], fill_value=0.0,
                           budget_s=1e-9)
    assert len(spent) == 10 * 12 and (spent["asbfly"][12:] == 0.0).all() and "budget is spent" in caplog.text
