"""The embedded demo dataset: the exact layout of each BirdCLEF edition, deterministic, idempotent."""
from __future__ import annotations

import ast
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from dataloader.demo import GROUND_TRUTH_FILE, METADATA_COLUMNS, generate_demo
from dataloader.demo_sounds import SPECIES
from inference.submission import n_windows

BIRDCLEF_HEADER = ("primary_label,secondary_labels,type,latitude,longitude,scientific_name,common_name,author,"
                   "license,rating,url,filename")


def test_layout_matches_birdclef_2024(small_demo):
    assert (small_demo / "train_metadata.csv").read_text().splitlines()[0] == BIRDCLEF_HEADER
    assert list(METADATA_COLUMNS) == BIRDCLEF_HEADER.split(",")
    for name in ("sample_submission.csv", "eBird_Taxonomy_v2021.csv", GROUND_TRUTH_FILE):
        assert (small_demo / name).is_file()
    meta = pd.read_csv(small_demo / "train_metadata.csv")
    assert meta["primary_label"].nunique() == len(SPECIES) >= 10
    for _, row in meta.iterrows():
        assert row["filename"].startswith(f"{row['primary_label']}/XC") and row["filename"].endswith(".ogg")
        assert isinstance(ast.literal_eval(row["secondary_labels"]), list)
        assert isinstance(ast.literal_eval(row["type"]), list)
        assert (small_demo / "train_audio" / row["filename"]).is_file()
    assert (meta["secondary_labels"] != "[]").any(), "some recordings have a secondary species"
    sample = pd.read_csv(small_demo / "sample_submission.csv")
    assert list(sample.columns) == ["row_id", *sorted(meta["primary_label"].unique())]
    assert list(small_demo.glob("unlabeled_soundscapes/*.ogg"))


def test_audio_is_32k_mono_vorbis_of_varied_length(small_demo):
    durations = []
    for path in sorted(small_demo.glob("train_audio/*/*.ogg")):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (32000, 1, "OGG", "VORBIS")
        durations.append(info.duration)
    assert min(durations) >= 0.9 and max(durations) <= 60.5 and max(durations) / min(durations) > 5


def test_ground_truth_covers_every_window_with_calls_and_empty_windows(small_demo):
    truth = pd.read_csv(small_demo / GROUND_TRUTH_FILE)
    for path in small_demo.glob("test_soundscapes/*.ogg"):
        rows = truth[truth["row_id"].str.startswith(path.stem + "_")]
        assert len(rows) == n_windows(sf.info(str(path)).duration)
    calls = truth.drop(columns="row_id").sum(axis=1)
    assert (calls == 0).any() and (calls >= 2).any(), "empty windows and overlapping species"


def test_generation_is_deterministic_whatever_the_processes_reused_when_complete_and_regenerated_when_not(tmp_path):
    first = generate_demo(tmp_path / "first", seed=7, scale=0.05, workers=2)
    again = generate_demo(tmp_path / "again", seed=7, scale=0.05, workers=1)
    for name in ("train_metadata.csv", "sample_submission.csv", GROUND_TRUTH_FILE, "eBird_Taxonomy_v2021.csv"):
        assert (again / name).read_bytes() == (first / name).read_bytes()
    files = sorted(p.relative_to(first) for p in first.glob("**/*.ogg"))
    assert len(files) > 30 and files == sorted(p.relative_to(again) for p in again.glob("**/*.ogg"))
    for rel in files:  # the same samples (an OGG stream's serial number is random, so not its bytes)
        a, _ = sf.read(str(first / rel))
        b, _ = sf.read(str(again / rel))
        np.testing.assert_array_equal(a, b)
    stamp = (again / "train_metadata.csv").stat().st_mtime_ns
    generate_demo(again, seed=7, scale=0.05)
    assert (again / "train_metadata.csv").stat().st_mtime_ns == stamp, "a complete demo is reused"
    (again / ".demo_complete.json").unlink()  # a generation that stopped before its end
    (again / "train_metadata.csv").write_text("broken")
    generate_demo(again, seed=7, scale=0.05)
    assert (again / "train_metadata.csv").read_bytes() == (first / "train_metadata.csv").read_bytes()


TRAIN_CSV_HEADER = ("primary_label,secondary_labels,type,filename,collection,rating,url,latitude,longitude,"
                    "scientific_name,common_name,author,license")


@pytest.mark.parametrize("edition", ["2025", "2026"])
def test_later_editions_have_their_exact_layout_and_label_kinds(edition_demos, edition):
    folder = edition_demos[edition]
    assert (folder / "train.csv").read_text().splitlines()[0] == TRAIN_CSV_HEADER
    assert (folder / "taxonomy.csv").read_text().splitlines()[0] == \
        "primary_label,inat_taxon_id,scientific_name,common_name,class_name"
    assert not (folder / "train_metadata.csv").exists() and not (folder / "unlabeled_soundscapes").exists()
    columns = list(pd.read_csv(folder / "sample_submission.csv", nrows=0).columns)[1:]
    taxonomy = pd.read_csv(folder / "taxonomy.csv", dtype=str)
    assert columns == taxonomy["primary_label"].tolist(), "sample_submission follows taxonomy.csv"
    assert any(c.isdigit() for c in columns), "numeric iNaturalist ids among the classes"
    train = pd.read_csv(folder / "train.csv", dtype=str)
    assert set(train["collection"]) == {"XC", "iNat", "CSA"}
    assert (train.loc[train["collection"] != "XC", "rating"].astype(float) == 0).all(), "iNat/CSA unrated"
    for _, row in train.iterrows():
        assert row["filename"].startswith(f"{row['primary_label']}/{row['collection']}")
        assert (folder / "train_audio" / row["filename"]).is_file()
    scapes = sorted(p.name for p in (folder / "train_soundscapes").glob("*.ogg"))
    assert scapes and all(re.search(r"_\d{8}_\d{6}\.ogg$", name) for name in scapes)
    for path in folder.glob("test_soundscapes/*.ogg"):
        assert sf.info(str(path)).duration <= 60.5, "one-minute test soundscapes"


def test_2026_demo_has_labelled_soundscapes_and_classes_heard_only_there(edition_demos):
    folder = edition_demos["2026"]
    columns = list(pd.read_csv(folder / "sample_submission.csv", nrows=0).columns)[1:]
    assert any("son" in c for c in columns), "an insect sonotype code"
    labels = pd.read_csv(folder / "train_soundscapes_labels.csv", dtype=str)
    assert list(labels.columns) == ["filename", "start", "end", "primary_label"]
    assert labels["start"].str.fullmatch(r"\d\d:\d\d:\d\d").all()
    assert labels["primary_label"].str.contains(";").any() and labels.duplicated().any()
    in_scapes = {x for v in labels["primary_label"] for x in v.split(";")}
    focal = set(pd.read_csv(folder / "train.csv", dtype=str)["primary_label"])
    assert len(in_scapes - focal) >= 2 and (in_scapes - focal) <= set(columns)
    truth = pd.read_csv(folder / GROUND_TRUTH_FILE)
    assert truth[sorted(in_scapes - focal)].to_numpy().sum() > 0, "they call in the test soundscapes too"
