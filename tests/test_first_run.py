"""The first run (issue 28): the embedded demo's own settings, declared in one place, land in the run's resolved
config and yield to --set and to a config file's own values; Kaggle data never gets them; --stage benchmark projects
the whole pipeline's time."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataloader.sources.demo_source import DEMO_SETTINGS
from training.config import demo_overrides, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_demos_own_settings_are_in_the_resolved_config_and_yield_to_the_user(run, small_demo, tmp_path):
    resolved = load_config(run["run_dir"] / "config.ini")  # the run trained on the demo
    chosen = {a.removeprefix("--set=").split("=")[0] for a in run["args"]}  # the run's own --set (batch 8) win
    assert chosen & set(DEMO_SETTINGS) and set(DEMO_SETTINGS) - chosen
    for key, value in DEMO_SETTINGS.items():
        section, name = key.split(".")
        if key not in chosen:
            assert str(getattr(getattr(resolved, section), name)).lower() == value.lower()
    assert resolved.trainer.batch_size == 8
    assert "embedded demo: its own settings" in (run["run_dir"] / "train.log").read_text()

    nothing = [f"paths.data_dir={tmp_path / 'no-kaggle-data'}"]
    cfg = load_config(ROOT / "config.ini", nothing)
    assert demo_overrides(cfg, nothing) == [f"{k}={v}" for k, v in DEMO_SETTINGS.items()]
    key = "trainer.n_epochs"
    assert key in DEMO_SETTINGS
    chosen = nothing + [f"{key}=3"]  # --set wins
    assert all(not o.startswith(key + "=") for o in demo_overrides(load_config(ROOT / "config.ini", chosen), chosen))
    section, name = key.split(".")
    text = (ROOT / "config.ini").read_text().replace(f"\n{name} = ", f"\n{name} = 7\n# was: ", 1)
    (tmp_path / "mine.ini").write_text(text)  # a config file of the user's own with another value wins
    mine = load_config(tmp_path / "mine.ini", nothing)
    assert getattr(getattr(mine, section), name) == 7 and not any(o.startswith(key) for o in
                                                                   demo_overrides(mine, nothing))
    kaggle = [f"paths.data_dir={small_demo}"]  # a folder in Kaggle's layout: competition defaults
    assert demo_overrides(load_config(ROOT / "config.ini", kaggle), kaggle) == []
    birdclef = nothing + ["data.source=folder"]
    assert demo_overrides(load_config(ROOT / "config.ini", birdclef), birdclef) == []


def test_the_benchmark_projects_the_whole_run_within_15_percent(run, tmp_path, capsys):
    import train_classifier

    base = [a for a in run["args"] if not any(k in a for k in ("cache_dir", "runs_dir", "testing_epochs",
                                                                "data_samples_for_testing"))]
    # 8 epochs of 5 steps (~6 s); the benchmark times 20 steps (4 passes of the loader, the median pass's pace). Two
    # runs of the same 6 s vary by up to ~15 % on a shared 2-core VM (measured: -18 to +18 % over 10 pairs, most
    # within 10 %), so a pair that misses is measured once more; a projection that is off fails both
    base += ["--set=testing.testing_epochs=8", "--set=testing.data_samples_for_testing=48"]

    def fresh(name: str) -> list[str]:  # each run makes its own cache, as a first run does
        return [f"--set=paths.cache_dir={tmp_path / name / 'cache'}", f"--set=paths.runs_dir={tmp_path / name}"]

    pairs = []
    for attempt in range(2):
        capsys.readouterr()
        bench_args = base + fresh(f"bench{attempt}") + ["--stage", "benchmark", "--benchmark-steps", "20"]
        assert train_classifier.main(bench_args) == 0
        bench = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert bench["seconds_prediction"] > 0 and bench["seconds_before_training"] > 0
        bench_dir = tmp_path / f"bench{attempt}" / bench["run_id"]  # the untrained model's prediction stays there
        assert (bench_dir / "benchmark_submission.csv").is_file()
        assert not list((run["work"] / "submissions").glob(f"{bench['run_id']}*"))
        assert train_classifier.main(base + fresh(f"real{attempt}")) == 0
        real = next(p for p in (tmp_path / f"real{attempt}").iterdir() if p.is_dir() and p.name != "cache")
        pairs.append((bench["seconds_for_pipeline"], json.loads((real / "summary.json").read_text())["wall_seconds"]))
        if pairs[-1][0] == pytest.approx(pairs[-1][1], rel=0.15):
            break
    else:
        raise AssertionError(f"(projected, measured) seconds: {pairs}; the last benchmark: {bench}")
