"""The archive loop on generated recordings with the real BirdNET V2.4 model: the database (incremental, resumed
after a real kill, bad files reported, reopened by perch-hoplite's own API), search by example, labels and their
export, margin sampling, a round's classifier in detect.py and over the database."""
from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.archive_audio import PLANT, SR, make_archive

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from archive.build import build_archive

    base = tmp_path_factory.mktemp("archive")
    paths = make_archive(base / "archive")
    report = build_archive(paths["root"], base / "db", "birdnet", workers=2)
    assert report.added == 4 and report.windows == 16  # 4 recordings of 12 s, 3-s windows
    return {**paths, "db": base / "db", "report": report}


def test_database_build_reports_bad_files_and_opens_in_hoplite(archive):
    from perch_hoplite.db.sqlite_usearch_impl import SQLiteUSearchDB

    unreadable = pd.read_csv(archive["db"] / "unreadable.csv")
    assert list(unreadable["file"]) == ["site_b/broken.wav"] and "unreadable" in unreadable["reason"][0]
    db = SQLiteUSearchDB.create(str(archive["db"]))  # hoplite's own API, no settings of ours
    assert db.count_embeddings() == 16 and db.get_embedding_dim() == 1024
    assert sorted(r.filename for r in db.get_all_recordings()) == [
        "site_a/dawn_01.wav", "site_a/dawn_02.wav", "site_b/night_01.wav", "site_b/night_02.wav"]
    assert sorted(d.name for d in db.get_all_deployments()) == ["site_a", "site_b"]
    window = db.get_all_windows()[0]
    assert list(window.offsets) == [0.0, 3.0]
    model = db.get_metadata("model_config")
    assert model.model_key == "birdnet" and model.embedding_dim == 1024 and model.model_config.hop_size_s == 3.0
    assert db.get_metadata("birdnet_analyzer_settings").AUDIO_SPEED == 1.0
    assert db.get_metadata("audio_sources").audio_globs[0]["base_path"] == str(archive["root"].resolve())
    hits = db.search(db.get_embedding(window.id), 1, approximate=False, score_fn_name="cos")
    assert int(hits.search_results[0].window_id) == window.id
    db.db.close()


def test_build_is_incremental(archive, tmp_path):
    import shutil

    from archive.build import build_archive

    root = tmp_path / "archive"
    shutil.copytree(archive["root"], root)
    db = tmp_path / "db"
    shutil.copytree(archive["db"], db)
    sf.write(root / "site_c" / "new.wav" if (root / "site_c").mkdir() is None else None,
             0.05 * np.random.default_rng(1).standard_normal(7 * SR).astype(np.float32), SR)
    # the copy's audio root differs: the database keeps the first root; a build of the copy adds new names only
    report = build_archive(root, db, "birdnet", workers=1)
    assert report.already == 4 and report.added == 1 and report.windows == 3
    assert len(report.unreadable) == 1  # the broken file is tried again and reported again
    again = build_archive(root, db, "birdnet", workers=1)
    assert again.added == 0 and again.already == 5


def test_build_refuses_another_model(archive, tmp_path):
    from archive.database import ArchiveError, ArchiveSettings, open_archive, settings_of

    stored = settings_of(open_archive(archive["db"], readonly=True))
    other = ArchiveSettings(**{**stored.to_metadata(), "hop_s": 1.5})
    with pytest.raises(ArchiveError, match="hop_s"):
        open_archive(archive["db"], other)


def test_build_resumes_after_a_kill(tmp_path):
    """A build killed with SIGKILL mid-way: the rerun embeds what is missing, each recording once."""
    root = tmp_path / "archive"
    rng = np.random.default_rng(3)
    for k in range(8):
        path = root / f"site_{k % 2}" / f"long_{k}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, 0.05 * rng.standard_normal(30 * SR).astype(np.float32), SR)
    db = tmp_path / "db"
    cmd = [sys.executable, "-m", "archive.build", "--audio-dir", str(root), "--db", str(db), "--workers", "1",
           "--commit-every", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def recordings() -> int:
        try:
            with sqlite3.connect(f"file:{db / 'hoplite.sqlite'}?mode=ro", uri=True, timeout=1) as con:
                return con.execute("SELECT COUNT(*) FROM recordings").fetchone()[0]
        except sqlite3.Error:
            return 0

    deadline = time.monotonic() + 120
    while recordings() < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = recordings()
    assert 2 <= done < 8, f"the kill came at {done} of 8 recordings"
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["already"] + summary["added"] == 8 and summary["already"] >= done
    with sqlite3.connect(db / "hoplite.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM recordings").fetchone()[0] == 8
        windows = con.execute("SELECT COUNT(*), COUNT(DISTINCT recording_id || '/' || offsets) FROM windows").fetchone()
    assert windows[0] == windows[1] == 8 * 10  # 30 s in 3-s windows, no window twice


def test_windows_without_vectors_are_embedded_again(archive, tmp_path):
    """SQLite committed but the index not saved (a kill between the two): the recording is removed and redone."""
    import shutil

    from archive.build import build_archive
    from archive.database import open_archive, windows_frame

    db_path = tmp_path / "db"
    shutil.copytree(archive["db"], db_path)
    db = open_archive(db_path)
    victim = windows_frame(db).query("file == 'site_a/dawn_02.wav'")["window_id"].tolist()
    db.ui.load()  # hoplite opens a saved index as a read-only memory map
    db.ui.remove(victim)  # the index as it was before this recording's vectors were saved
    db.ui.save()
    db.db.close()
    report = build_archive(archive["root"], db_path, "birdnet", workers=1)
    assert report.added == 1 and report.windows == len(victim)
    db = open_archive(db_path, readonly=True)
    assert db.count_embeddings() == 16 and len(windows_frame(db)) == 16


def test_search_finds_the_planted_example_first(archive, tmp_path):
    from archive.database import open_archive, settings_of
    from archive.search import example_vectors, parse_example, search_examples, write_hits
    from archive.window_embedders import load_window_embedder

    db = open_archive(archive["db"], readonly=True)
    settings = settings_of(db)
    embedder = load_window_embedder(settings.model)
    query = example_vectors(embedder, settings, parse_example(str(archive["query"])))
    hits = search_examples(db, [query], ["whistle"], top=5)
    assert (hits.loc[0, "file"], hits.loc[0, "start_s"]) == PLANT
    assert hits["score"].is_monotonic_decreasing and hits.loc[0, "score"] - hits.loc[1, "score"] > 0.1
    # a time range of a recording as the example (the planted whistle itself), its own recording left out
    inside = parse_example(f"{archive['root'] / PLANT[0]}@{PLANT[1]}-{PLANT[1] + 3}")
    own = db.db.execute("SELECT id FROM recordings WHERE filename = ?", (PLANT[0],)).fetchone()[0]
    hits2 = search_examples(db, [example_vectors(embedder, settings, inside)], ["range"], top=3,
                            exclude_recordings=[own])
    assert PLANT[0] not in set(hits2["file"]) and len(hits2) == 3
    # several examples, one search each: the best score of a window wins
    both = search_examples(db, [query, example_vectors(embedder, settings, inside)], ["a", "b"], "each", top=4)
    assert (both.loc[0, "file"], both.loc[0, "start_s"]) == PLANT and both.loc[0, "score"] > 0.99
    out = write_hits(hits, settings, tmp_path / "hits")
    assert pd.read_csv(out)["window_id"].tolist() == hits["window_id"].tolist()
    assert (tmp_path / "hits" / "review" / "hits.png").stat().st_size > 10_000
    excerpt, sr = sf.read(sorted((tmp_path / "hits" / "excerpts").glob("0001_*.wav"))[0])
    assert sr == SR and abs(len(excerpt) / sr - 4.0) < 0.01  # the 3-s window with 0.5 s each side


def test_labels_export_as_the_csv_source(archive, tmp_path):
    import shutil

    from archive.database import open_archive, windows_frame
    from archive.labels import export_labels, label_matrix, labels_frame, set_label
    from dataloader.sources.local import load_csv

    db_path = tmp_path / "db"
    shutil.copytree(archive["db"], db_path)
    db = open_archive(db_path)
    w = windows_frame(db).set_index(["file", "start_s"])["window_id"]
    set_label(db, w[PLANT], "whistle", "positive")
    set_label(db, w[("site_a/dawn_01.wav", 0.0)], "whistle", "positive", "first")
    set_label(db, w[("site_a/dawn_01.wav", 0.0)], "whistle", "negative", "second")  # a changed mind replaces
    set_label(db, w[("site_a/dawn_02.wav", 3.0)], "whistle", "skip")
    labels = labels_frame(db)
    assert len(labels) == 3 and labels.set_index("window_id").loc[w[("site_a/dawn_01.wav", 0.0)], "kind"] == "negative"
    ids, targets, mask = label_matrix(db, ["whistle", "chirp"])
    assert len(ids) == 2 and targets[:, 0].tolist() == sorted(targets[:, 0].tolist()) and mask.all()
    _, _, mask2 = label_matrix(db, ["whistle", "chirp"], unlabelled_as="unknown")
    assert mask2[:, 0].all() and not mask2[:, 1].any()
    out = tmp_path / "labels.csv"
    table = export_labels(db, out)
    assert sorted(table["label"]) == ["background", "whistle"]
    loaded = load_csv(out, "background", None).set_index("filename")
    assert loaded.loc[str(archive["root"] / PLANT[0]), "events"] == [(PLANT[1], PLANT[1] + 3.0, "whistle")]
    export_labels(db, tmp_path / "clips.csv", clips_dir=tmp_path / "clips")
    clips = load_csv(tmp_path / "clips.csv", "background", None)
    assert sorted(clips["primary_label"]) == ["background", "whistle"]
    clip, sr = sf.read(clips.loc[clips["primary_label"] == "whistle", "path"].item())
    assert sr == SR and len(clip) == 3 * SR


def test_margin_sampling_picks_the_windows_nearest_the_boundary():
    from archive.active_learning import select_windows

    probs = np.array([[0.99, 0.01], [0.52, 0.02], [0.10, 0.47], [0.95, 0.90], [0.30, 0.05], [0.05, 0.61]])
    picked, why = select_windows(probs, 3, "margin")
    assert picked.tolist() == [1, 2, 5] and why.tolist() == [0, 1, 1]
    top, top_why = select_windows(probs, 2, "topk")
    assert top.tolist() == [0, 3] and top_why.tolist() == [0, 1]
    rand, _ = select_windows(probs, 6, "random", seed=1)
    assert sorted(rand.tolist()) == list(range(6))
    gap, gap_why = select_windows(probs, 2, "top2")
    assert gap.tolist() == [3, 4] and gap_why.tolist() == [0, 0]  # gaps 0.05 (0.95 vs 0.90), then 0.25
    spread, spread_why = select_windows(probs, 3, "top2_spread")
    # 3 (class 0) first; 4 is class 0 again, so 2 (class 1, gap 0.37) comes before it, then 4 fills the round
    assert spread.tolist() == [3, 2, 4] and spread_why.tolist() == [0, 1, 0]


def test_auto_strategy_follows_the_labels():
    from archive.active_learning import auto_strategy

    assert auto_strategy(np.eye(3, dtype=np.float32)) == "top2"  # one class per window
    assert auto_strategy(np.array([[1, 1, 0], [0, 0, 1]], dtype=np.float32)) == "margin"  # overlapping classes
    assert auto_strategy(np.array([[1], [0]], dtype=np.float32)) == "margin"  # one detector


def test_a_rounds_classifier_runs_in_detect_py_and_over_the_database(archive, tmp_path):
    import shutil

    from archive.active_learning import run_round
    from archive.database import open_archive, windows_frame
    from archive.labels import set_label

    db_path = tmp_path / "db"
    shutil.copytree(archive["db"], db_path)
    db = open_archive(db_path)
    frame = windows_frame(db)
    planted = frame[(frame["file"] == PLANT[0]) & (frame["start_s"] == PLANT[1])]["window_id"].item()
    set_label(db, planted, "whistle", "positive")
    for w in frame[frame["file"] == "site_a/dawn_01.wav"]["window_id"]:
        set_label(db, w, "whistle", "negative")
    db.db.close()
    first = run_round(db_path, batch=4)
    assert first["round"] == 1 and first["positives"] == {"whistle": 1}
    queue = pd.read_csv(first["queue"])
    assert len(queue) == 4 and not set(queue["window_id"]) & {planted} and (queue["reason"] == "margin: whistle").all()
    assert run_round(db_path, batch=4, strategy="random")["round"] == 2
    checkpoint = Path(first["checkpoint"])
    out = tmp_path / "detect"
    subprocess.run([sys.executable, "detect.py", "--checkpoint", str(checkpoint), "--audio-dir", str(archive["root"]),
                    "--out-dir", str(out), "--min-score", "0"], cwd=ROOT, check=True, capture_output=True)
    from_audio = pd.read_csv(out / "scores.csv").set_index(["file", "start_s"])["score"]
    scored = tmp_path / "scored"
    result = subprocess.run([sys.executable, "-m", "archive.score", "--db", str(db_path), "--checkpoint",
                             str(checkpoint), "--out-dir", str(scored), "--min-score", "0"], cwd=ROOT, check=True,
                            capture_output=True, text=True)
    assert json.loads(result.stdout)["windows"] == 16
    from_db = pd.read_csv(scored / "scores.csv").set_index(["file", "start_s"])["score"]
    assert len(from_db) == len(from_audio) == 16
    np.testing.assert_allclose(from_db.sort_index().to_numpy(), from_audio.sort_index().to_numpy(), atol=2e-3)
    assert from_db.idxmax() == PLANT
    detections = pd.read_csv(scored / "detections.csv")
    assert PLANT[0] in set(detections["file"]) and (scored / "raven_selections.csv").is_file()


def test_a_checkpoints_penultimate_layer_is_an_archive_model(run, tmp_path):
    """A trained CNN as the archive's embedder: its vectors are what enters its classifier, so its classifier on
    a stored vector gives predict.py's probability for that window."""
    from archive.build import build_archive
    from archive.database import open_archive, settings_of, vectors, windows_frame
    from factory.families import model_from_checkpoint
    from inference.predict import SoundscapePredictor
    from utils.checkpoints import load_checkpoint

    import torch

    checkpoint = run["summary"]["checkpoint"]
    soundscape = sorted((run["demo"] / "test_soundscapes").glob("*.ogg"))[0]
    root = tmp_path / "archive"
    root.mkdir()
    (root / soundscape.name).symlink_to(soundscape)
    report = build_archive(root, tmp_path / "db", f"checkpoint:{checkpoint}", workers=1)
    db = open_archive(tmp_path / "db", readonly=True)
    settings = settings_of(db)
    assert settings.model == f"checkpoint:{checkpoint}" and settings.window_s == 5.0 and report.windows > 2
    frame = windows_frame(db)
    head = model_from_checkpoint(load_checkpoint(checkpoint)).eval().get_classifier()
    with torch.inference_mode():
        probs = torch.sigmoid(head(torch.from_numpy(vectors(db, frame["window_id"].to_numpy())))).numpy()
    expected = SoundscapePredictor([checkpoint]).predict_file(soundscape)[1]
    assert probs.shape == expected.shape
    np.testing.assert_allclose(probs, expected, atol=2e-3)  # float16 vectors in the index
