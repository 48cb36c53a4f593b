"""download_data.sh with a fake Kaggle CLI (the real service cannot be reached from tests)."""
from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_KAGGLE = """#!/usr/bin/env python3
import sys, zipfile, pathlib
args = sys.argv[1:]
target = pathlib.Path(args[args.index("-p") + 1])
slug = args[args.index("-c") + 1]
if slug == "forbidden":
    print("403 - Forbidden - You must accept this competition's rules", file=sys.stderr)
    sys.exit(1)
with zipfile.ZipFile(target / f"{slug}.zip", "w") as z:
    z.writestr("train_metadata.csv", "primary_label,secondary_labels,filename\\n")
    z.writestr("train_audio/asbfly/XC1.ogg", b"")
    z.writestr("../escaped.txt", "should not leave the target")
"""


def run(tmp_path: Path, *args: str, token: bool = True) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "kaggle").write_text(FAKE_KAGGLE)
    (bin_dir / "kaggle").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path / "home")}
    if token:
        env["KAGGLE_API_TOKEN"] = "secret-token-value"
    return subprocess.run(["bash", str(ROOT / "download_data.sh"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_missing_credentials_give_a_clear_message(tmp_path):
    result = run(tmp_path, "birdclef-2024", str(tmp_path / "data"), token=False)
    assert result.returncode == 2
    assert "No Kaggle credentials" in result.stderr and "KAGGLE_API_TOKEN" in result.stderr


def test_download_unzips_inside_the_target_and_never_prints_the_token(tmp_path):
    target = tmp_path / "data" / "birdclef-2024"
    result = run(tmp_path, "birdclef-2024", str(target))
    assert result.returncode == 0, result.stderr
    assert (target / "train_metadata.csv").is_file() and (target / "train_audio/asbfly/XC1.ogg").is_file()
    assert not (tmp_path / "data" / "escaped.txt").exists() and not list(target.glob("*.zip"))
    assert "secret-token-value" not in result.stdout + result.stderr
    again = run(tmp_path, "birdclef-2024", str(target))
    assert again.returncode == 0 and "nothing to download" in again.stdout


def test_refused_download_explains_the_rules(tmp_path):
    result = run(tmp_path, "forbidden", str(tmp_path / "data"))
    assert result.returncode == 1 and "accept the competition rules" in result.stderr
