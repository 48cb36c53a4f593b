"""Shared fixtures: offline hub, repository on sys.path, a small demo dataset generated once per session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # no hub at test time: fail fast instead of retrying for ~47 s
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo dataset at a quarter of the default size (>= 3 recordings per species, 2 test soundscapes)."""
    from dataloader.demo import generate_demo

    return generate_demo(tmp_path_factory.mktemp("demo") / "demo", seed=7, scale=0.25)


@pytest.fixture(scope="session")
def edition_demos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small demos in the BirdCLEF 2025 and 2026 layouts (generated once per session)."""
    from dataloader.demo import generate_demo

    root = tmp_path_factory.mktemp("edition-demos")
    return {edition: generate_demo(root / edition, seed=7, scale=0.15, edition=edition)
            for edition in ("2025", "2026")}


@pytest.fixture(scope="session")
def run(small_demo, tmp_path_factory):
    """A testing-mode run of train_classifier.py on the small 2024 demo (shared by the modules that predict)."""
    import json

    import train_classifier

    work = tmp_path_factory.mktemp("run")
    overrides = [f"paths.demo_dir={small_demo}", f"paths.data_dir={work / 'no-kaggle-data'}",
                 f"paths.cache_dir={work / 'cache'}", f"paths.runs_dir={work / 'runs'}",
                 f"paths.submissions_dir={work / 'submissions'}", "testing.testing=true",
                 "testing.data_samples_for_testing=24", "testing.testing_epochs=1", "data.num_workers=1",
                 "data.demo_seed=7", "data.demo_scale=0.25", "model.transfer_learning=false", "trainer.batch_size=8"]
    args = ["--set=" + o for o in overrides]
    assert train_classifier.main(args) == 0
    run_dir = next((work / "runs").iterdir())
    return {"work": work, "run_dir": run_dir, "args": args, "demo": small_demo,
            "summary": json.loads((run_dir / "summary.json").read_text())}
