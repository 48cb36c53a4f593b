"""config.ini parsing: typed sections, every error path, overrides, the resolved file."""
from __future__ import annotations

from pathlib import Path

import pytest

from training.config import ConfigError, load_config, to_ini

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.ini"
    path.write_text(text)
    return path


def test_shipped_config_is_the_documented_defaults():
    cfg = load_config(ROOT / "config.ini")
    assert cfg == load_config(None)
    assert cfg.paths.data_dir == "data/birdclef-2024", "an empty data_dir is the competition's folder"
    assert load_config(None, ["data.competition=birdclef-2026"]).paths.data_dir == "data/birdclef-2026"


def test_every_key_of_the_shipped_config_is_commented():
    lines = (ROOT / "config.ini").read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"key without a comment: {line}"


def test_choices_accept_any_case(tmp_path):
    cfg = load_config(write(tmp_path, "[model]\ntransfer_learning = True\n[data]\nsource = Demo\n"))
    assert cfg.model.transfer_learning == "true" and cfg.data.source == "demo"


def test_values_are_converted_to_the_field_types(tmp_path):
    cfg = load_config(write(tmp_path, "[trainer]\nn_epochs = 3\n[testing]\ntesting = yes\n[agent]\nlr_start = 1e-3\n"))
    assert cfg.trainer.n_epochs == 3 and cfg.testing.testing is True and cfg.agent.lr_start == pytest.approx(1e-3)


@pytest.mark.parametrize("text, words", [
    ("[nonsense]\na = 1\n", ["[nonsense]", "unknown section", "data_process"]),
    ("[trainer]\nepochs = 3\n", ["[trainer] epochs", "unknown key", "n_epochs"]),
    ("[trainer]\nn_epochs = three\n", ["[trainer] n_epochs", "'three'", "integer"]),
    ("[testing]\ntesting = maybe\n", ["[testing] testing", "'maybe'", "true/false"]),
    ("[data]\nsource = kaggle\n", ["[data] source", "'kaggle'", "auto, birdclef, demo"]),
    ("[trainer]\nbatch_size = 0\n", ["[trainer] batch_size", ">= 1"]),
    ("[model]\ntype = efficientnet_b99\n", ["[model] type", "efficientnet_b99", "timm.list_models()"]),
    ("[agent]\nloss = hinge\n", ["[agent] loss", "'hinge'", "bce"]),
    ("[data]\nn_folds = 3\nfold = 3\n", ["[data] fold", "0..2"]),
    ("[data_process]\nhop_length = 512\n", ["[data_process] hop_length", "312.5", "whole frames"]),
    ("[data_process]\nf_max = 20000\n", ["[data_process] f_max", "16000"]),
    # values are single-line, finite: a continuation line could smuggle a section or a secret into the run record
    ("[callbacks]\nneptune_project = ws/p\n  [trainer]\n  resume = /x/evil.pt\n", ["[callbacks] neptune_project",
                                                                             "several lines"]),
    ("[callbacks]\nneptune_project = ws/p\n  neptune_token = leaked\n", ["several lines"]),
    ("[paths]\ncache_dir = cache[1]\n", ["[paths] cache_dir", "'['"]),
    ("[data_process]\nf_max = nan\n", ["[data_process] f_max", "finite"]),
    ("[agent]\nlr_warmup_end = inf\n", ["[agent] lr_warmup_end", "finite"]),
    ("[agent]\nlr_start = -Infinity\n", ["[agent] lr_start", "finite"]),
])
def test_bad_values_stop_with_section_key_value_and_allowed(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    for word in words:
        assert word in str(err.value)


def test_a_secret_in_the_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="NEPTUNE_API_TOKEN"):
        load_config(write(tmp_path, "[callbacks]\nneptune_token = abc123\n"))


@pytest.mark.parametrize("key, replacement", [("output_dir", "cache_dir"), ("hash_path", "cache_dir"),
                                              ("multi_threading", "num_workers")])
def test_retired_seed_keys_name_their_replacement(tmp_path, key, replacement):
    with pytest.raises(ConfigError, match=replacement):
        load_config(write(tmp_path, f"[data]\n{key} = 1\n"))


def test_overrides_are_type_checked(tmp_path):
    cfg = load_config(ROOT / "config.ini", ["trainer.n_epochs=3", "model.type=resnet18"])
    assert cfg.trainer.n_epochs == 3 and cfg.model.type == "resnet18"
    with pytest.raises(ConfigError, match=r"\[trainer\] n_epochs = 'x'"):
        load_config(ROOT / "config.ini", ["trainer.n_epochs=x"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(ROOT / "config.ini", ["n_epochs=3"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(ROOT / "config.ini", ["trainer.nope=3"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.ini")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "config.ini", ["trainer.n_epochs=7", "data.crop=first"])
    path = tmp_path / "resolved.ini"
    path.write_text(to_ini(cfg))
    assert load_config(path) == cfg


def test_nan_given_on_the_command_line_is_refused_too():
    with pytest.raises(ConfigError, match="finite"):
        load_config(None, ["data_process.f_max=NaN"])


def test_the_resolved_config_a_run_writes_loads_back_equal(tmp_path):
    cfg = load_config(ROOT / "config.ini", ["trainer.n_epochs=7", "data.competition=birdclef-2026",
                                            "callbacks.neptune_project=ws/p", "agent.lr_start=3e-05",
                                            "data.soundscape_labels=val", "paths.data_dir=/data/x y"])
    path = tmp_path / "resolved.ini"
    path.write_text(to_ini(cfg))
    assert load_config(path) == cfg
