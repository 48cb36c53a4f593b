"""Data sources: the registry and its column contract, BirdCLEF editions told from their files, labels kept as
strings in sample_submission order, secondary labels mapped or counted, labelled soundscape windows, ratings,
soundscape names."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from dataloader.soundscape_windows import as_training_rows, split_windows
from dataloader.sources import DataSourceError, SourceData, load_source, read_birdclef, recognise_edition
from dataloader.sources.birdclef import filter_min_rating, parse_soundscape_name, soundscape_table
from dataloader.sources.registry import SOURCES, register_source
from training.config import load_config

CLASSES = ["1139490", "116570", "47158son01", "amakin1", "bbwduc"]  # Kaggle's string order: digits first


def touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("x\n")
    return folder


def edition_folder(root: Path, edition: str) -> Path:
    """A tiny data folder of ``edition`` with real (empty) audio paths, numeric and sonotype labels."""
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"row_id": ["s_5"], **{c: [0.2] for c in CLASSES}}).to_csv(root / "sample_submission.csv",
                                                                          index=False)
    rows = pd.DataFrame({
        "primary_label": ["116570", "amakin1", "amakin1", "bbwduc", "1139490"],
        "secondary_labels": ["[]", "['116570']", "['Synthetica bbwduc', 'grekis']", "['99999', 'grekis']", "[]"],
        "type": ["['call']"] * 5,
        "filename": ["116570/iNat1.ogg", "amakin1/XC1.ogg", "amakin1/XC2.ogg", "bbwduc/XC3.ogg", "1139490/CSA1.ogg"],
        "collection": ["iNat", "XC", "XC", "XC", "CSA"],
        "rating": ["0.0", "4.5", "1.0", "2.0", "0.0"],
    })
    if edition == "2024":
        rows.drop(columns="collection").to_csv(root / "train_metadata.csv", index=False)
        touch(root, "eBird_Taxonomy_v2021.csv")
        return root
    rows.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"primary_label": CLASSES, "inat_taxon_id": ["1139490", "116570", "47158", "11111", "22222"],
                  "scientific_name": [f"Synthetica {c}" for c in CLASSES], "common_name": CLASSES,
                  "class_name": ["Mammalia", "Amphibia", "Insecta", "Aves", "Aves"]}).to_csv(root / "taxonomy.csv",
                                                                                          index=False)
    scapes = root / "train_soundscapes"
    touch(scapes, "BC2026_Train_0001_S08_20250606_030007.ogg", "BC2026_Train_0002_S03_20250607_220000.ogg",
          "odd_name.ogg")
    if edition == "2026":
        pd.DataFrame({
            "filename": ["BC2026_Train_0001_S08_20250606_030007.ogg"] * 4 + ["BC2026_Train_0002_S03_20250607_220000.ogg",
                                                                         "missing.ogg"],
            "start": ["00:00:00", "00:00:00", "00:00:05", "00:01:00", "00:00:10", "00:00:00"],
            "end": ["00:00:05", "00:00:05", "00:00:10", "00:01:05", "00:00:15", "00:00:05"],
            "primary_label": ["47158son01;amakin1", "47158son01;amakin1", "116570", "47158son01;nosuch", "47158",
                              "amakin1"],
        }).to_csv(root / "train_soundscapes_labels.csv", index=False)
    return root


@pytest.mark.parametrize("edition", ["2024", "2025", "2026"])
def test_each_edition_is_recognised_from_its_files(tmp_path, edition):
    assert recognise_edition(edition_folder(tmp_path / edition, edition)).name == edition


def test_a_2026_folder_can_be_read_as_2025_when_asked(tmp_path):
    folder = edition_folder(tmp_path / "d", "2026")
    assert recognise_edition(folder, "2025").name == "2025"
    with pytest.raises(DataSourceError, match="edition = 2024.*lacks train_metadata.csv"):
        recognise_edition(folder, "2024")


def test_a_folder_mixing_two_layouts_asks_for_the_edition(tmp_path):
    folder = edition_folder(tmp_path / "d", "2025")
    touch(folder, "train_metadata.csv", "eBird_Taxonomy_v2021.csv")
    with pytest.raises(DataSourceError, match="mixes the layouts of editions 2024, 2025.*set \\[data\\] edition"):
        recognise_edition(folder)


def test_an_unknown_kaggle_like_folder_stops_listing_found_and_needed_files(tmp_path):
    folder = touch(tmp_path / "d", "train.csv")
    (folder / "train_audio").mkdir()
    with pytest.raises(DataSourceError) as err:
        recognise_edition(folder)
    text = str(err.value)
    assert "matches no edition" in text and "Found: train.csv, train_audio/" in text
    assert "2024: train_metadata.csv + eBird_Taxonomy_v2021.csv" in text and "2025: train.csv + taxonomy.csv" in text
    assert "2026: train.csv + taxonomy.csv + train_soundscapes_labels.csv" in text


def cfg_for(data_dir: Path, tmp_path: Path, *overrides: str):
    return load_config(None, [f"paths.data_dir={data_dir}", f"paths.demo_dir={tmp_path / 'demo-never'}",
                              *overrides])


def test_auto_trains_on_a_2026_folder_and_never_falls_back_to_the_demo_when_one_is_not_understood(tmp_path):
    folder = edition_folder(tmp_path / "kaggle", "2026")
    cfg = cfg_for(folder, tmp_path)
    source = load_source(cfg.data, cfg.paths)
    assert source.name == "birdclef-2026" and not source.is_demo and source.windows is not None
    broken = touch(tmp_path / "broken", "train.csv")  # train.csv without taxonomy.csv
    cfg = cfg_for(broken, tmp_path)
    with pytest.raises(DataSourceError, match="matches no edition.*Found: train.csv"):
        load_source(cfg.data, cfg.paths)
    assert not (tmp_path / "demo-never").exists()


def test_birdclef_source_without_data_says_how_to_download(tmp_path):
    cfg = cfg_for(tmp_path / "nothing", tmp_path, "data.source=birdclef", "data.competition=birdclef-2025")
    with pytest.raises(DataSourceError, match="./download_data.sh birdclef-2025"):
        load_source(cfg.data, cfg.paths)


def test_class_list_is_sample_submission_order_with_numeric_labels_kept_as_strings(tmp_path):
    source = read_birdclef(edition_folder(tmp_path / "d", "2025"))
    assert source.classes == CLASSES and all(isinstance(c, str) for c in source.classes)
    assert source.recordings["primary_label"].tolist()[0] == "116570"
    assert isinstance(source.recordings["primary_label"].iloc[0], str)
    assert source.report["classes_without_focal_audio"] == ["47158son01"]
    assert source.soundscape_dir.name == "train_soundscapes" and source.test_dir.name == "test_soundscapes"


def test_secondary_labels_map_through_taxonomy_and_unknown_ones_are_counted(tmp_path):
    source = read_birdclef(edition_folder(tmp_path / "d", "2025"))
    secondary = dict(zip(source.recordings["filename"], source.recordings["secondary_labels"]))
    assert secondary["amakin1/XC1.ogg"] == ["116570"]
    assert secondary["amakin1/XC2.ogg"] == ["bbwduc"], "scientific name -> class"
    assert secondary["bbwduc/XC3.ogg"] == [], "its own class is not its secondary label"
    assert source.report["unknown_secondary_labels"] == {"grekis": 2, "99999": 1}


def test_2024_layout_reads_the_same_columns(tmp_path):
    source = read_birdclef(edition_folder(tmp_path / "d", "2024"))
    assert source.name == "birdclef-2024" and source.soundscape_dir.name == "unlabeled_soundscapes"
    assert source.recordings["group"].tolist()[1] == "XC1" and source.windows is None


def test_soundscape_labels_parse_times_and_joined_labels_and_merge_duplicates(tmp_path):
    source = read_birdclef(edition_folder(tmp_path / "d", "2026"))
    w = source.windows
    assert list(zip(w["start_s"], w["end_s"])) == [(0.0, 5.0), (5.0, 10.0), (60.0, 65.0), (10.0, 15.0)]
    assert w["labels"].tolist() == [["47158son01", "amakin1"], ["116570"], ["47158son01"], ["47158son01"]], \
        "47158 (the sonotype's iNat id) maps to it; duplicates merged"
    assert source.report["soundscape_duplicate_rows_merged"] == 1
    assert source.report["soundscape_files_missing"] == ["missing.ogg"]
    assert source.report["unknown_soundscape_labels"] == {"nosuch": 1}
    assert source.report["classes_only_in_soundscapes"] == ["47158son01"]
    assert set(w["group"]) == {"soundscape:BC2026_Train_0001_S08_20250606_030007",
                               "soundscape:BC2026_Train_0002_S03_20250607_220000"}


def test_windows_of_one_soundscape_stay_in_one_split():
    windows = pd.DataFrame({"filename": [f"f{i % 7}.ogg" for i in range(70)], "labels": [["a"]] * 70,
                            "start_s": np.arange(70) * 5.0})
    for fold in range(5):
        parts = split_windows(windows, "both", 5, fold, seed=3)
        assert not set(parts["train"]["filename"]) & set(parts["val"]["filename"])
        assert len(parts["train"]) + len(parts["val"]) == 70 and len(parts["val"]) > 0
    assert len(split_windows(windows, "train", 5, 0, 3)["val"]) == 0
    assert len(split_windows(windows, "val", 5, 0, 3)["train"]) == 0
    assert len(split_windows(windows, "off", 5, 0, 3)["train"]) == 0


def test_classes_without_focal_audio_learn_from_their_soundscape_windows(tmp_path):
    from dataloader.curation import classes_without_examples
    from dataloader.dataset import make_targets

    source = read_birdclef(edition_folder(tmp_path / "d", "2026"))
    rows = as_training_rows(source.windows)
    data = SimpleNamespace(task="multilabel", secondary_label_weight=0.5, secondary_labels="weight")
    y = make_targets(rows, CLASSES, data)
    assert y[:, CLASSES.index("47158son01")].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert y[0, CLASSES.index("amakin1")] == 1.0
    focal_only = source.recordings
    assert classes_without_examples(focal_only, CLASSES) == ["47158son01"]
    assert classes_without_examples(pd.concat([focal_only, rows]), CLASSES) == []


def test_min_rating_keeps_unrated_recordings_and_reports_drops_per_class(tmp_path):
    table = read_birdclef(edition_folder(tmp_path / "d", "2025")).recordings
    kept, report = filter_min_rating(table, 2.5)
    assert sorted(kept["filename"]) == ["1139490/CSA1.ogg", "116570/iNat1.ogg", "amakin1/XC1.ogg"]
    assert report["rating_dropped_per_class"] == {"amakin1": 1, "bbwduc": 1}
    assert report["classes_lost_to_min_rating"] == ["bbwduc"]
    assert filter_min_rating(table, 0.0) == (table, {})


def test_site_date_and_hour_come_from_soundscape_names(tmp_path):
    assert parse_soundscape_name("BC2026_Train_0001_S08_20250606_030007.ogg") == \
        {"site": "S08", "date": "2025-06-06", "hour": 3}
    assert parse_soundscape_name("H02_20230420_074000.ogg") == {"site": "H02", "date": "2023-04-20", "hour": 7}
    assert parse_soundscape_name("soundscape_1446779.ogg") == {"site": "", "date": "", "hour": None}
    assert parse_soundscape_name("S01_20231399_250000.ogg")["site"] == "", "no such date: empty, row kept"
    table = soundscape_table(edition_folder(tmp_path / "d", "2025") / "train_soundscapes")
    assert len(table) == 3 and table.set_index("filename").loc["odd_name.ogg", "site"] == ""


def test_a_new_source_is_one_decorated_function_and_its_columns_are_checked(tmp_path):
    @register_source("test-broken")
    def broken(data, paths):
        return SourceData("test-broken", tmp_path, pd.DataFrame({"path": ["a.wav"], "primary_label": ["a"]}))

    try:
        cfg = load_config(None)
        cfg.data.source = "test-broken"
        with pytest.raises(DataSourceError, match="missing column\\(s\\) filename, secondary_labels, extra_labels, group"):
            load_source(cfg.data, cfg.paths)
    finally:
        SOURCES.unregister("test-broken")


def test_the_entry_script_stops_on_a_folder_it_does_not_understand_with_the_message(tmp_path, caplog):
    import train_classifier

    broken = touch(tmp_path / "broken", "train.csv")
    code = train_classifier.main([f"--set=paths.data_dir={broken}", f"--set=paths.runs_dir={tmp_path / 'runs'}",
                                  f"--set=paths.demo_dir={tmp_path / 'demo-never'}", "--set=testing.testing=true"])
    assert code == 2 and "matches no edition" in caplog.text and "Found: train.csv" in caplog.text
    assert not (tmp_path / "demo-never").exists()
