"""download_data.sh with a fake Kaggle CLI (the real service cannot be reached from tests)."""
from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_KAGGLE = """#!/usr/bin/env python3
import os, sys, zipfile, pathlib
args = sys.argv[1:]
target = pathlib.Path(args[args.index("-p") + 1])
slug = args[args.index("-c") + 1]
with open(os.environ["FAKE_KAGGLE_CALLS"], "a") as log:
    log.write(slug + "\\n")
if slug == "forbidden":
    print("403 - Forbidden - You must accept this competition's rules", file=sys.stderr)
    sys.exit(1)
if slug == "badtoken":
    print("401 - Unauthorized", file=sys.stderr)
    sys.exit(1)
if slug == "offline":
    print("Failed to establish a new connection: [Errno -3] Temporary failure in name resolution", file=sys.stderr)
    sys.exit(1)
with zipfile.ZipFile(target / f"{slug}.zip", "w") as z:
    z.writestr("train_metadata.csv", "primary_label,secondary_labels,filename\\n")
    z.writestr("train_audio/asbfly/XC1.ogg", b"")
    z.writestr("unlabeled_soundscapes/1.ogg", b"")
    z.writestr("../escaped.txt", "should not leave the target")
"""


def run(tmp_path: Path, *args: str, token: bool = True) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "kaggle").write_text(FAKE_KAGGLE)
    (bin_dir / "kaggle").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path / "home"),
           "FAKE_KAGGLE_CALLS": str(tmp_path / "calls.log")}
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


def calls(tmp_path: Path) -> int:
    log = tmp_path / "calls.log"
    return len(log.read_text().split()) if log.is_file() else 0


@pytest.mark.parametrize("slug, code, words", [("forbidden", 3, "accept the rules"), ("badtoken", 2, "credentials"),
                                               ("offline", 5, "network")])
def test_refusal_bad_credentials_and_network_failure_get_distinct_messages(tmp_path, slug, code, words):
    result = run(tmp_path, slug, str(tmp_path / "data"))
    assert result.returncode == code and words in result.stderr
    assert "secret-token-value" not in result.stdout + result.stderr


def test_an_interrupted_download_is_fetched_again_and_a_complete_zip_is_reused(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "birdclef-2024.zip").write_bytes(b"PK\x03\x04 cut short")  # an interrupted download
    result = run(tmp_path, "birdclef-2024", str(target))
    assert result.returncode == 0 and "incomplete" in result.stdout and calls(tmp_path) == 1
    with zipfile.ZipFile(target / "birdclef-2024.zip", "w") as z:  # a complete archive, not yet unzipped
        z.writestr("train_metadata.csv", "primary_label,secondary_labels,filename\n")
    again = run(tmp_path, "birdclef-2024", str(target))
    assert again.returncode == 0 and "Reusing" in again.stdout and calls(tmp_path) == 1


def test_skip_unlabeled_leaves_the_unlabeled_soundscapes_out(tmp_path):
    target = tmp_path / "data"
    result = run(tmp_path, "--skip-unlabeled", "birdclef-2024", str(target))
    assert result.returncode == 0, result.stderr
    assert (target / "train_audio/asbfly/XC1.ogg").is_file() and not (target / "unlabeled_soundscapes").exists()
    assert "refused 1 archive entries" in result.stderr
