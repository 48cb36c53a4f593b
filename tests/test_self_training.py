"""Self-training as one command (issue 25): soft targets, out-of-fold pool folds, rounds on the tiny demo, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from training.config import ConfigError


def test_soft_targets_power_cap_and_classes_no_model_predicts():
    from training.pseudo_pool import powers, round_power, soft_targets

    frame = pd.DataFrame({"row_id": ["a_5", "a_10"], "x": [0.9, 0.25], "y": [0.5, 1.0], "z": [0.3, 0.1]})
    out = soft_targets(frame, 2.0, 0.95, ["x", "y"])
    np.testing.assert_allclose(out["x"], [0.81, 0.0625])
    np.testing.assert_allclose(out["y"], [0.25, 0.95])  # 1.0 ** 2 capped
    assert out["z"].isna().all()  # no model predicts z: left out of the loss, not taught as absent
    assert list(out["row_id"]) == ["a_5", "a_10"] and frame["z"].tolist() == [0.3, 0.1]  # the input is kept
    assert powers("1, 1.5;2") == [1.0, 1.5, 2.0]
    assert [round_power([1.0, 1.5], r) for r in (1, 2, 3)] == [1.0, 1.5, 1.5]
    for bad in ("", "0", "x", "-1"):
        with pytest.raises(ConfigError, match="power"):
            powers(bad)


def test_pool_folds_are_seeded_balanced_and_by_recording():
    from training.pseudo_pool import pool_folds

    files = [Path(f"pool/s{k:02d}.ogg") for k in range(11)]
    folds = pool_folds(files, 3, seed=5)
    assert folds == pool_folds(list(reversed(files)), 3, seed=5)  # the listing order does not matter
    assert sorted(folds) == [f.stem for f in files]
    assert sorted(np.bincount(list(folds.values()))) == [3, 4, 4]
    assert folds != pool_folds(files, 3, seed=6)


def test_soft_pseudo_labels_enter_the_loss_and_unpredicted_classes_stay_out(tmp_path):
    """The pseudo-label CSV's probabilities are the rows' targets; a NaN class adds nothing to the loss."""
    from dataloader.curation import pseudo_label_rows
    from dataloader.dataset import make_targets
    from factory.losses import create_loss
    from training.config import load_config

    audio = tmp_path / "pool"
    audio.mkdir()
    (audio / "s1.ogg").write_bytes(b"")
    pd.DataFrame({"row_id": ["s1_5", "s1_10"], "x": [0.8, 0.1], "y": [np.nan, np.nan]}).to_csv(
        tmp_path / "p.csv", index=False)
    rows = pseudo_label_rows(tmp_path / "p.csv", audio, 5.0, min_prob=0.0)
    assert len(rows) == 2 and list(rows["start_s"]) == [0.0, 5.0]  # a window where nothing calls still teaches
    y = make_targets(rows, ["x", "y"], load_config(None).data)
    np.testing.assert_allclose(y[:, 0], [0.8, 0.1])
    assert np.isnan(y[:, 1]).all()
    loss = create_loss("bce")
    logits = torch.zeros(2, 2, requires_grad=True)
    loss(logits, torch.from_numpy(y)).backward()
    assert logits.grad[:, 1].abs().sum() == 0 and logits.grad[:, 0].abs().sum() > 0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.zeros(2), torch.tensor([0.8, 0.1]))
    assert float(loss(torch.zeros(2, 2), torch.from_numpy(y))) == pytest.approx(float(expected), rel=1e-5)
    assert len(pseudo_label_rows(tmp_path / "p.csv", audio, 5.0, min_prob=0.5)) == 1  # NaN is not a probability


class Stop(Exception):
    """A loop killed mid-round."""


@pytest.fixture(scope="module")
def pool_demo(tmp_path_factory):
    from dataloader.demo import generate_demo

    return generate_demo(tmp_path_factory.mktemp("pool-demo") / "demo", seed=7, scale=0.1, unlabeled=6)


def test_rounds_on_the_tiny_demo_out_of_fold_then_resumed_at_the_round_where_it_stopped(pool_demo, tmp_path,
                                                                                        monkeypatch):
    import train_classifier

    work = tmp_path / "work"
    overrides = [f"paths.demo_dir={pool_demo}", f"paths.data_dir={work / 'none'}", f"paths.cache_dir={work / 'cache'}",
                 f"paths.runs_dir={work / 'runs'}", f"paths.submissions_dir={work / 'subs'}", "testing.testing=true",
                 "testing.data_samples_for_testing=24", "testing.testing_epochs=1", "data.num_workers=1",
                 "data.demo_seed=7", "data.demo_scale=0.1", "data.demo_unlabeled=6", "model.transfer_learning=false",
                 "trainer.batch_size=8", "self_training.power=1.0,2.0", "self_training.cap=0.9",
                 "augmentation.augment_soundscape_mix=true"]
    args = ["--set=" + o for o in overrides]
    real_run, calls = train_classifier.run, []

    def dies_at_the_fourth(cfg, *a, **k):
        calls.append(cfg.data.pseudo_labels)
        if len(calls) == 4:  # round 2's first student: the loop is killed
            raise Stop
        return real_run(cfg, *a, **k)

    monkeypatch.setattr(train_classifier, "run", dies_at_the_fourth)
    with pytest.raises(Stop):
        train_classifier.main([*args, "--rounds", "2"])
    assert calls[0] == "" and all("round_1" in c for c in calls[1:3]) and "round_2" in calls[3]
    loop = next((work / "runs").glob("selftrain-*"))
    state = json.loads((loop / "state.json").read_text())
    assert state["rounds"][0]["done"] and state["rounds"][1]["done"]
    assert not any(r["students"] for r in state["rounds"][2:])  # killed before round 2's first student finished

    calls.clear()
    monkeypatch.setattr(train_classifier, "run", lambda cfg, *a, **k: (calls.append(cfg.data.pseudo_labels),
                                                                       real_run(cfg, *a, **k))[1])
    assert train_classifier.main([*args, "--rounds", "2", "--resume-loop", "auto"]) == 0
    assert len(calls) == 2 and all("round_2" in c for c in calls)  # only what the killed loop had not done

    table = pd.read_csv(loop / "rounds.csv")
    assert list(table["round"]) == [0, 1, 2] and list(table["models"]) == [1, 2, 2]
    assert table["val_score"].between(0, 1).all() and table["soundscape_score"].between(0, 1).all()
    assert list(table["power"].fillna(0)) == [0, 1.0, 2.0] and (loop / "rounds.png").stat().st_size > 5000
    # out of fold: a student never trains on the pseudo-labels of its own fold, and every pool row is labelled
    from training.pseudo_pool import file_stem, pool_folds

    pool = sorted((pool_demo / "unlabeled_soundscapes").glob("*.ogg"))
    folds = pool_folds(pool, 2, seed=42)
    for r in (1, 2):
        for k in (0, 1):
            stems = set(file_stem(pd.read_csv(loop / f"round_{r}" / f"train_fold{k}.csv")["row_id"]))
            assert stems and all(folds[s] != k for s in stems)
        pseudo = pd.read_csv(loop / f"round_{r}" / "pseudo.csv")
        assert set(file_stem(pseudo["row_id"])) == {p.stem for p in pool}
        cap = pd.read_csv(loop / f"round_{r}" / "train_fold0.csv").iloc[:, 1:].to_numpy()
        assert np.nanmax(cap) <= 0.9 + 1e-6
    # the students differ in their training seed (42 + fold), not in their data ([data] split_seed): every run of the
    # loop, round 0 included, validates on the same recordings, and none trained on another's validation recordings
    state = json.loads((loop / "state.json").read_text())
    runs = [Path(p) for entry in state["rounds"] for p in entry["students"].values()]
    assert len(runs) == 5 and len({tuple(sorted(pd.read_csv(p / "split" / "val.csv")["path"])) for p in runs}) == 1
    from training.config import load_config
    from training.self_training import run_loop

    with pytest.raises(ConfigError, match="settings differ"):  # another config does not continue this loop
        run_loop(load_config(None, [o for o in overrides if "power" not in o] + ["self_training.rounds=2"]),
                 lambda cfg: loop, resume=str(loop))


def test_soundscape_chunk_mixing_blends_at_the_weight_and_caps_the_labels_it_adds():
    import dataclasses

    from dataloader.augment import BatchAugment, WaveformOps
    from training.config import load_config

    aug = dataclasses.replace(load_config(None).augmentation, augment_gain=False, augment_add_noise=False,
                              augment_spec_augment=False, augment_mixup=False, augment_soundscape_mix=True,
                              soundscape_mix_prob=1.0, soundscape_mix_weight=0.5, soundscape_mix_cap=1.0)
    cx = torch.full((2, 1, 3, 4), 2.0)
    cy = torch.tensor([[0.8, 0.6, 0.0], [0.5, 0.0, float("nan")]])
    units = np.array([1.0, 0.5, 0.0], dtype=np.float32)
    augment = BatchAugment(aug, units, chunks=lambda n: (cx[:n], cy[:n]))
    x = torch.zeros(2, 1, 3, 4)
    y = torch.tensor([[0.0, 0.2, float("nan")], [1.0, 0.0, 0.0]])
    mx, my = augment(x.clone(), y.clone())
    six_db = 20 * np.log10(0.5)  # each half at -6 dB, in each bin's units, then the sounds added (max)
    np.testing.assert_allclose(mx[0, 0, :, 0], [2 + six_db, 2 + six_db / 2, 2.0], rtol=1e-5)
    # row 0: the chunk's labels sum to 1.4 > cap 1: scaled by 1 / 1.4, joined by max; a masked label stays masked
    np.testing.assert_allclose(my[0, :2], [0.8 / 1.4, 0.6 / 1.4], rtol=1e-5)
    assert torch.isnan(my[0, 2])
    np.testing.assert_allclose(my[1], [1.0, 0.0, 0.0])  # 0.5 under the cap adds nothing above the example's 1.0
    distilled = torch.cat([y, torch.tensor([[0.3, 0.3, 0.3], [0.1, 0.1, 0.1]])], dim=1)  # labels, then teacher's
    _, dy = augment(x.clone(), distilled.clone())
    np.testing.assert_allclose(dy[:, 3:], distilled[:, 3:])  # the teacher's half is not the chunk's to change
    capped = BatchAugment(dataclasses.replace(aug, soundscape_mix_cap=0.5), units, chunks=lambda n: (cx[:n], cy[:n]))
    np.testing.assert_allclose(capped(x.clone(), y.clone())[1][0, :2], [0.8 * 0.5 / 1.4, 0.6 * 0.5 / 1.4], rtol=1e-5)
    off = BatchAugment(dataclasses.replace(aug, soundscape_mix_prob=0.0), units, chunks=lambda n: (cx[:n], cy[:n]))
    ox, oy = off(x.clone(), y.clone())
    assert torch.equal(ox, x) and torch.equal(torch.nan_to_num(oy, nan=-1), torch.nan_to_num(y, nan=-1))
    wave = WaveformOps.blend(torch.ones(1, 1, 1, 4), torch.full((1, 1, 1, 4), 3.0), 0.25, None)
    np.testing.assert_allclose(wave.flatten(), [1.5] * 4)  # samples: 0.75 x 1 + 0.25 x 3


def test_the_raw_teacher_and_a_round_are_scored_on_the_same_labelled_validation_windows(edition_demos, tmp_path):
    """2026: the labelled soundscape windows the runs validate on, as a truth table; an ensemble's score on them over
    the teacher's classes is the competition metric of its rows there."""
    from inference.predict import SoundscapePredictor, predict_folder
    from training.config import load_config
    from training.pseudo_pool import labelled_validation, window_predictions
    from dataloader.sources import load_source
    from utils.metrics import competition_score
    from test_scoring_run import stand_in

    demo = edition_demos["2026"]
    cfg = load_config(None, [f"paths.demo_dir={demo}", f"paths.data_dir={tmp_path / 'none'}", "data.source=demo",
                             "data.demo_edition=2026", "data.demo_seed=7", "data.demo_scale=0.15"])
    source = load_source(cfg.data, cfg.paths)
    truth = labelled_validation(cfg, source)
    val_files = {Path(p).name for p in truth.attrs["paths"]}
    labelled = source.windows[source.windows["filename"].isin(val_files)]
    assert len(truth) == labelled.drop_duplicates(["filename", "start_s"]).shape[0] and len(val_files) >= 1
    assert truth.iloc[:, 1:].to_numpy().sum() > 0 and list(truth.columns[1:]) == source.classes
    model = stand_in(tmp_path / "m.pt", source.classes)
    some = source.classes[: len(source.classes) // 2]
    got, predicted = window_predictions([str(model)], truth, source.data_dir, 5.0)
    assert list(got["row_id"]) == list(truth["row_id"]) and predicted == source.classes
    frame = predict_folder(SoundscapePredictor([model], row_s=5.0), demo, source.classes,
                           files=[Path(p) for p in truth.attrs["paths"]])
    frame = frame[frame["row_id"].isin(set(truth["row_id"]))]
    frame = frame.set_index("row_id").loc[truth["row_id"]].reset_index()
    np.testing.assert_allclose(got[some].to_numpy(), frame[some].to_numpy(), atol=1e-6)
    assert competition_score(truth[["row_id", *some]], got[["row_id", *some]], "row_id") == pytest.approx(
        competition_score(truth[["row_id", *some]], frame[["row_id", *some]], "row_id"))


def test_mixed_views_for_consistent_teaching(tmp_path):
    """Views of a few clips: each a crop of its clip blended with another clip at a share in the asked range, the
    same files whatever the number of workers; folds = 1 is one student on the whole pool, for one round only."""
    import soundfile as sf

    from dataloader.mixed_views import mix_view, write_views

    clips = []
    for k, freq in enumerate((500.0, 2000.0, 4000.0)):
        t = np.arange(int(3.0 * 16000)) / 16000
        clips.append(tmp_path / f"c{k}.wav")
        sf.write(clips[-1], (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    one = write_views(clips, tmp_path / "v1", per_clip=2, seconds=5.0, sample_rate=16000, seed=3, workers=1)
    two = write_views(clips, tmp_path / "v2", per_clip=2, seconds=5.0, sample_rate=16000, seed=3, workers=2)
    assert [p.name for p in one] == [p.name for p in two] and len(one) == 6
    for a, b in zip(one, two):
        x, sr = sf.read(a)
        assert sr == 16000 and len(x) == 80000 and np.array_equal(x, sf.read(b)[0])
    alone = write_views(clips, tmp_path / "v0", per_clip=1, seconds=5.0, sample_rate=16000, mix=(0.0, 0.0), workers=1)
    spectrum = np.abs(np.fft.rfft(sf.read(alone[1])[0]))  # clip 1 alone (2 kHz): share 0 keeps no other clip
    assert np.argmax(spectrum) * 16000 / 80000 == pytest.approx(2000, abs=5)
    loud = mix_view(np.ones(4, np.float32), np.ones(4, np.float32), 0.5, (6.0, 6.0))
    assert np.abs(loud).max() <= 0.99  # normalised only when it would clip

    from training.config import load_config
    from training.self_training import run_loop

    with pytest.raises(ConfigError, match="folds = 1"):
        run_loop(load_config(None, ["self_training.rounds=2", "self_training.folds=1"]), lambda cfg: tmp_path)


def test_labels_of_a_table_joined_from_clips_and_pseudo_labelled_windows():
    """A csv source's clips carry event lists, pseudo-labelled windows do not (NaN after the join): the labels
    present are still found, which a student of a csv source needs at the end of its training."""
    from dataloader.curation import classes_without_examples, present_labels

    clips = pd.DataFrame({"primary_label": ["a"], "extra_labels": [[]], "events": [[(0.0, 1.0, "a")]],
                          "secondary_labels": [[]]})
    pseudo = pd.DataFrame({"primary_label": ["b"], "soft_targets": [{"b": 0.9}], "extra_labels": [[]],
                           "secondary_labels": [[]]})
    table = pd.concat([clips, pseudo], ignore_index=True)
    assert present_labels(table) == ["a", "b"] and classes_without_examples(table, ["a", "b", "c"]) == ["c"]


def _windows(recordings: int, rows: int, classes: int, seed: int) -> pd.DataFrame:
    """A truth table: ``recordings`` x ``rows`` labelled windows, each class present in about a third of them."""
    rng = np.random.default_rng(seed)
    truth = pd.DataFrame((rng.random((recordings * rows, classes)) < 0.33).astype(np.int8),
                         columns=[f"c{j}" for j in range(classes)])
    truth.insert(0, "row_id", [f"rec{i}_{5 * (k + 1)}" for i in range(recordings) for k in range(rows)])
    return truth


def _noisy(truth: pd.DataFrame, noise: float, seed: int) -> pd.DataFrame:
    """Probabilities of the truth blurred by Gaussian noise of ``noise`` (0.1: nearly right; 3: nearly random)."""
    rng = np.random.default_rng(seed)
    x = truth.iloc[:, 1:].to_numpy(np.float64) + rng.normal(0.0, noise, (len(truth), truth.shape[1] - 1))
    frame = pd.DataFrame(1 / (1 + np.exp(-4 * (x - 0.5))), columns=truth.columns[1:])
    frame.insert(0, "row_id", truth["row_id"].to_numpy())
    return frame.sample(frac=1.0, random_state=seed)  # any row order: frames are matched by row id


@pytest.mark.parametrize("kind", ["mean", "rank"])
def test_the_teacher_blend_leans_on_whichever_side_is_right_and_is_scored_out_of_sample(kind):
    from training.teacher_blend import blend, blend_score, fit_teacher_blend, stack_members

    truth = _windows(6, 20, 4, seed=0)
    classes, teacher_classes = list(truth.columns[1:]), ["c0", "c1", "c2"]
    good, bad = _noisy(truth, 0.15, 1), _noisy(truth, 3.0, 2)

    def alone(frame, known):
        stacked = stack_members([frame], truth["row_id"], classes, [known])
        return blend_score(truth, blend(stacked, 1, [1.0], "mean"), classes, teacher_classes)  # teacher's classes

    # a good teacher, poor students: the teacher takes most of the blend, which stays near the teacher's score
    fit = fit_teacher_blend([bad, _noisy(truth, 3.0, 3)], [classes, classes], good, teacher_classes, truth, kind)
    assert fit.cross_fitted and fit.weight >= 0.5 and fit.score >= alone(good, teacher_classes) - 0.02
    assert fit.score > alone(bad, classes) + 0.1
    weights = fit.member_weights(2)
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0) and weights[-1] == fit.weight
    # good students, a poor teacher: the teacher gets nothing, the blend is the students'
    fit = fit_teacher_blend([good], [classes], bad, teacher_classes, truth, kind)
    assert fit.weight == 0.0 and fit.score >= alone(good, classes) - 0.005 and fit.score > alone(bad, classes) + 0.1
    # one labelled recording: nothing to hold out, and the result says so
    one = truth[truth["row_id"].str.startswith("rec0_")].reset_index(drop=True)
    assert not fit_teacher_blend([good], [classes], bad, teacher_classes, one, kind).cross_fitted
    with pytest.raises(ValueError, match="allowed: mean, rank"):
        fit_teacher_blend([good], [classes], bad, teacher_classes, truth, "max")


def test_the_loop_scores_the_blend_as_predict_computes_it_and_writes_its_command(edition_demos, tmp_path):
    """2026 demo, two stand-in models as student and teacher (the teacher predicting half the classes): the mean
    blend scored on the labelled windows equals predict.py's ensemble with the weights blend.json gives it."""
    from dataloader.sources import load_source
    from inference.predict import SoundscapePredictor, predict_folder
    from training.config import load_config
    from training.pseudo_pool import labelled_validation
    from training.self_training import LoopState, teacher_scores, write_blend
    from training.teacher_blend import TeacherBlend, blend, blend_score, stack_members
    from utils.metrics import competition_score
    from test_scoring_run import stand_in

    demo = edition_demos["2026"]
    cfg = load_config(None, [f"paths.demo_dir={demo}", f"paths.data_dir={tmp_path / 'none'}", "data.source=demo",
                             "data.demo_edition=2026", "data.demo_seed=7", "data.demo_scale=0.15",
                             "self_training.teacher_blend=mean"])
    source = load_source(cfg.data, cfg.paths)
    truth = labelled_validation(cfg, source)
    half = source.classes[: len(source.classes) // 2]
    student = stand_in(tmp_path / "student.pt", source.classes, seed=1)
    teacher = stand_in(tmp_path / "teacher.pt", half, seed=2)
    scores = teacher_scores([str(student)], [str(teacher)], truth, half, source, cfg)
    assert {"teacher_classes_soundscape_val", "raw_teacher_soundscape_val", "blend_soundscape_val",
            "blend_teacher_weight", "blend_cross_fitted"} <= set(scores)

    weights = TeacherBlend(0.3, 0.0, True, "mean").member_weights(1)
    predictor = SoundscapePredictor([student, teacher], row_s=5.0, blend="mean", weights=weights)
    frame = predict_folder(predictor, demo, source.classes, files=[Path(p) for p in truth.attrs["paths"]])
    frame = frame[frame["row_id"].isin(set(truth["row_id"]))]
    scored = [c for c in half if truth[c].sum() > 0]
    expected = competition_score(truth[["row_id", *scored]], frame[["row_id", *scored]], "row_id")
    from training.pseudo_pool import window_predictions

    frames = [window_predictions([m], truth, source.data_dir, 5.0) for m in (str(student), str(teacher))]
    stacked = stack_members([f for f, _ in frames], truth["row_id"], source.classes, [p for _, p in frames])
    got = blend_score(truth, blend(stacked, 2, weights, "mean"), source.classes, half)
    assert got == pytest.approx(expected, abs=1e-4)

    state = LoopState(tmp_path / "loop", {}, [
        {"round": 0, "students": {}, "done": True, "members": [str(teacher)], "row": {"round": 0}},
        {"round": 1, "students": {"0": "a"}, "done": True, "members": [str(student)], "row": {"round": 1, **scores}}])
    state.folder.mkdir()
    data = json.loads(write_blend(state, "mean").read_text())
    assert data["members"] == [str(student), str(teacher)] and data["weights"][-1] == scores["blend_teacher_weight"]
    assert data["predict"].startswith(f"python predict.py --checkpoint {student} {teacher} --blend mean --weights")
    assert data["blend_soundscape_val"] == scores["blend_soundscape_val"]


def test_a_finished_round_without_the_blend_is_scored_again_on_resume_and_only_then(tmp_path):
    from training.config import load_config
    from training.self_training import Loop, LoopState, rescore_blend

    state = LoopState(tmp_path, {}, [{"round": 0, "done": True, "students": {}, "members": ["t.pt"]},
                                     {"round": 1, "done": True, "students": {}, "members": ["s.pt"],
                                      "row": {"round": 1, "val_score": 0.9}}])
    calls = []

    class Scored(Loop):
        def scores(self, members):
            calls.append(list(members))
            return {"blend_soundscape_val": 0.95, "teacher_blend": self.cfg.self_training.teacher_blend}

    def loop(kind, truth=pd.DataFrame({"row_id": ["a_5"], "x": [1]})):
        cfg = load_config(None, [f"self_training.teacher_blend={kind}"])
        return Scored(cfg, None, tmp_path, state, lambda c: tmp_path, [], {}, ["x"], truth)

    rescore_blend(loop("mean"), 1)
    assert calls == [["s.pt"]] and state.rounds[1]["row"] == {"round": 1, "val_score": 0.9,
                                                             "blend_soundscape_val": 0.95, "teacher_blend": "mean"}
    assert json.loads((tmp_path / "state.json").read_text())["rounds"][1]["row"]["teacher_blend"] == "mean"
    rescore_blend(loop("mean"), 1)  # already scored with this blend
    rescore_blend(loop("off"), 1)  # no blend asked for
    rescore_blend(loop("rank", truth=None), 1)  # no labelled windows
    assert len(calls) == 1
    rescore_blend(loop("rank"), 1)  # another blend: scored again
    assert len(calls) == 2 and state.rounds[1]["row"]["teacher_blend"] == "rank"
