"""download_data.sh against a fake Kaggle CLI 2.x that answers as the real one does today (the service cannot be
reached from tests): "Authentication required" on stdout, HTTP errors with their hints on stderr, resumed
downloads of a partial archive, any edition's archive."""
from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_KAGGLE = r'''#!/usr/bin/env python3
"""Kaggle CLI 2.x stand-in: credentials as 2.x looks for them, its messages, its resume of a partial file."""
import os, random, sys, zipfile, pathlib
args = sys.argv[1:]
if args == ["--version"]:
    print("Kaggle CLI 2.2.5")
    sys.exit(0)
assert args[:2] == ["competitions", "download"], args
slug = args[2]
target = pathlib.Path(args[args.index("-p") + 1])
home = pathlib.Path(os.environ["HOME"])
folder = home / ".kaggle" if (home / ".kaggle").is_dir() else home / ".config" / "kaggle"
token = os.environ.get("KAGGLE_API_TOKEN") or next(
    (p.read_text().strip() for p in (folder / "access_token", folder / "access_token.txt") if p.is_file()), None)
oauth = (folder / "credentials.json").is_file()
legacy = (folder / "kaggle.json").is_file() or ("KAGGLE_USERNAME" in os.environ and "KAGGLE_KEY" in os.environ)
mode = os.environ.get("FAKE_KAGGLE_MODE", "")
archive = target / f"{slug}.zip"
with open(os.environ["FAKE_KAGGLE_CALLS"], "a") as log:
    log.write(f"{slug} resume:{archive.stat().st_size if archive.exists() else 0}\n")
if not (token or oauth or legacy) or token == "revoked-token":
    print("Authentication required to call the Kaggle API.\n\nRecommended: log in with OAuth ...\n    kaggle auth login")
    sys.exit(1)
if slug == "forbidden":
    print(f"403 Client Error: Forbidden for url: https://api.kaggle.com/v1/competitions/{slug}/download\n\n"
          "You don't have access to this resource.\nIf this is a competition, you may need to accept its rules "
          "first at\n  https://www.kaggle.com/competitions/<competition>/rules", file=sys.stderr)
    sys.exit(1)
if slug == "birdclef-1999":
    print("404 Client Error: Not Found for url: https://api.kaggle.com/...\n\nThe resource was not found. Check the "
          "spelling of the reference you passed.", file=sys.stderr)
    sys.exit(1)
if mode == "offline":
    print("requests.exceptions.ConnectionError: Failed to resolve 'api.kaggle.com'", file=sys.stderr)
    sys.exit(1)
files = {"sample_submission.csv": "row_id,a\n", "train_audio/asbfly/XC1.ogg": b"x", "../escaped.txt": "outside"}
if slug == "birdclef-2024":
    files.update({"train_metadata.csv": "primary_label,secondary_labels,filename\n",
                  "eBird_Taxonomy_v2021.csv": "SPECIES_CODE\n", "unlabeled_soundscapes/1.ogg": b"x"})
else:
    files.update({"train.csv": "primary_label,secondary_labels,filename\n", "taxonomy.csv": "primary_label\n",
                  "train_soundscapes/H01_20250101_000000.ogg": b"x", "train_soundscapes/H02_20250101_000000.ogg": b"x"})
if slug == "birdclef-2026":
    files["train_soundscapes_labels.csv"] = "filename,start,end,primary_label\nH01_20250101_000000.ogg,00:00:00,00:00:05,a\n"
tmp = target / "full.tmp"
with zipfile.ZipFile(tmp, "w") as z:
    files["padding.bin"] = random.Random(slug).randbytes(4096)  # incompressible: a cut archive is short
    for name, data in files.items():  # the same bytes at every call, as the server's file is
        z.writestr(zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0)), data)
full = tmp.read_bytes()
tmp.unlink()
if archive.exists():  # CLI 2.x resumes a partial file with an HTTP Range request
    have = archive.stat().st_size
    print(f"Resuming from {have} bytes ({len(full) - have} bytes left)...")
    with open(archive, "ab") as f:
        f.write(full[have:])
else:
    archive.write_bytes(full[: len(full) // 2] if mode == "interrupt" else full)
if mode == "interrupt":
    print("Connection broken: IncompleteRead", file=sys.stderr)
    sys.exit(1)
print(f"Downloading {slug}.zip to {target}\n100%|##########| done")
'''


def run(tmp_path: Path, *args: str, token: str | None = "secret-token-value", mode: str = "",
        env: dict | None = None) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "kaggle").write_text(FAKE_KAGGLE)
    (bin_dir / "kaggle").chmod(0o755)
    full_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path / "home"),
                "FAKE_KAGGLE_CALLS": str(tmp_path / "calls.log"), "FAKE_KAGGLE_MODE": mode, **(env or {})}
    if token:
        full_env["KAGGLE_API_TOKEN"] = token
    return subprocess.run(["bash", str(ROOT / "download_data.sh"), *args], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=60)


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.is_file() else []


def test_missing_credentials_are_the_clis_answer_on_stdout_translated(tmp_path):
    result = run(tmp_path, "birdclef-2024", str(tmp_path / "data"), token=None)
    assert result.returncode == 2 and len(calls(tmp_path)) == 1, "the CLI decides, the script translates"
    assert "Authentication required" in result.stdout
    assert "kaggle auth login" in result.stderr and "KAGGLE_API_TOKEN" in result.stderr


def test_a_rejected_token_gets_the_credentials_message(tmp_path):
    result = run(tmp_path, "birdclef-2024", str(tmp_path / "data"), token="revoked-token")
    assert result.returncode == 2 and "valid credentials" in result.stderr
    assert "revoked-token" not in result.stdout + result.stderr


@pytest.mark.parametrize("where", ["oauth", "access_token_file", "config_dir", "legacy_env"])
def test_credentials_the_cli_accepts_are_never_refused_by_the_script(tmp_path, where):
    home = tmp_path / "home"
    env = {}
    if where == "oauth":
        (home / ".kaggle").mkdir(parents=True)
        (home / ".kaggle" / "credentials.json").write_text('{"refresh_token": "r"}')
    elif where == "access_token_file":
        (home / ".kaggle").mkdir(parents=True)
        (home / ".kaggle" / "access_token.txt").write_text("tok")
    elif where == "config_dir":  # ~/.config/kaggle when ~/.kaggle does not exist
        (home / ".config" / "kaggle").mkdir(parents=True)
        (home / ".config" / "kaggle" / "access_token").write_text("tok")
    else:
        env = {"KAGGLE_USERNAME": "me", "KAGGLE_KEY": "k"}
    target = tmp_path / "data"
    result = run(tmp_path, "birdclef-2025", str(target), token=None, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "train.csv").is_file()


@pytest.mark.parametrize("slug, code, words", [
    ("forbidden", 3, "competitions/forbidden/rules"), ("birdclef-1999", 4, "404"), ("birdclef-2024", 5, "network")])
def test_refusal_missing_competition_and_network_failure_get_distinct_exits(tmp_path, slug, code, words):
    result = run(tmp_path, slug, str(tmp_path / "data"), mode="offline" if code == 5 else "")
    assert result.returncode == code and words in result.stderr
    assert "secret-token-value" not in result.stdout + result.stderr


@pytest.mark.parametrize("slug, marker, soundscapes", [
    ("birdclef-2024", "train_metadata.csv", "unlabeled_soundscapes/1.ogg"),
    ("birdclef-2025", "train.csv", "train_soundscapes/H01_20250101_000000.ogg"),
    ("birdclef-2026", "train_soundscapes_labels.csv", "train_soundscapes/H01_20250101_000000.ogg")])
def test_each_edition_is_complete_by_its_own_files_and_never_fetched_twice(tmp_path, slug, marker, soundscapes):
    target = tmp_path / "data" / slug
    result = run(tmp_path, slug, str(target))
    assert result.returncode == 0, result.stderr
    assert (target / marker).is_file() and (target / soundscapes).is_file()
    assert not (tmp_path / "data" / "escaped.txt").exists() and not list(target.glob("*.zip"))
    assert "refused 1 archive entries" in result.stderr
    assert "secret-token-value" not in result.stdout + result.stderr
    again = run(tmp_path, slug, str(target))
    assert again.returncode == 0 and "nothing to download" in again.stdout and len(calls(tmp_path)) == 1


def test_the_slug_and_folder_come_from_the_competition_setting(tmp_path):
    config = tmp_path / "c.ini"
    config.write_text("[data]\ncompetition = birdclef-2026\n")
    result = run(tmp_path, "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "birdclef-2026" / "train_soundscapes_labels.csv").is_file()
    assert calls(tmp_path)[0].startswith("birdclef-2026")


def test_an_interrupted_download_is_resumed_from_its_partial_file(tmp_path):
    target = tmp_path / "data"
    first = run(tmp_path, "birdclef-2025", str(target), mode="interrupt")
    assert first.returncode == 5 and "resumes it" in first.stderr
    partial = (target / "birdclef-2025.zip").stat().st_size
    assert partial > 0, "the partial archive is kept for the CLI"
    second = run(tmp_path, "birdclef-2025", str(target))
    assert second.returncode == 0, second.stderr
    assert "Resuming from" in second.stdout and calls(tmp_path)[-1] == f"birdclef-2025 resume:{partial}"
    assert (target / "train.csv").is_file() and not (target / "birdclef-2025.zip").exists()


def test_a_complete_zip_left_by_an_earlier_run_is_unzipped_without_downloading(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    with zipfile.ZipFile(target / "birdclef-2024.zip", "w") as z:
        z.writestr("train_metadata.csv", "primary_label,secondary_labels,filename\n")
    result = run(tmp_path, "birdclef-2024", str(target))
    assert result.returncode == 0 and "Reusing" in result.stdout and calls(tmp_path) == []


def test_skip_unlabeled_keeps_only_the_labelled_train_soundscapes(tmp_path):
    target = tmp_path / "data"
    result = run(tmp_path, "--skip-unlabeled", "birdclef-2026", str(target))
    assert result.returncode == 0, result.stderr
    assert (target / "train_soundscapes" / "H01_20250101_000000.ogg").is_file(), "labelled: kept"
    assert not (target / "train_soundscapes" / "H02_20250101_000000.ogg").exists(), "unlabeled: left out"
    old = run(tmp_path, "--skip-unlabeled", "birdclef-2024", str(tmp_path / "d24"))
    assert old.returncode == 0 and not (tmp_path / "d24" / "unlabeled_soundscapes").exists()


def test_the_install_step_refuses_a_python_older_than_the_kaggle_cli_needs(tmp_path):
    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -c ] && exec python3 -c 'import sys; sys.exit(1)'\necho 'Python 3.10.12'\n")
    fake.chmod(0o755)
    result = subprocess.run(["bash", str(ROOT / "tools" / "venv.sh"), "true"], capture_output=True, text=True,
                            env={**os.environ, "PYTHON": str(fake), "BIRDCLEF_VENV_ROOT": str(tmp_path / "venvs")},
                            timeout=30)
    assert result.returncode == 2 and "Python >= 3.11" in result.stderr and "Kaggle CLI 2.x" in result.stderr
    assert not (tmp_path / "venvs").exists(), "nothing installed"
