#!/usr/bin/env bash
# Download a BirdCLEF competition's data with the Kaggle CLI 2.x and unzip it (Kaggle layout).
#
#   ./download_data.sh [--skip-unlabeled] [--config FILE] [SLUG] [TARGET_DIR]
#
# SLUG: default the [data] competition of config.ini (birdclef-2024, birdclef-2025, birdclef-2026, ...);
# TARGET_DIR: default config.ini's [paths] data_dir, or data/<SLUG> (when a SLUG is given, always data/<SLUG>).
# Credentials are the CLI's business (never printed, never pre-judged here): KAGGLE_API_TOKEN (a token or a file
# path), ~/.kaggle/access_token (or access_token.txt), OAuth from `kaggle auth login`, the legacy kaggle.json or
# KAGGLE_USERNAME + KAGGLE_KEY; ~/.config/kaggle when ~/.kaggle does not exist. The competition's rules must be
# accepted on kaggle.com first. Idempotent: a complete download (train.csv for 2025 and later, train_metadata.csv
# before) is never fetched twice; an interrupted download's partial archive is left for the CLI to resume.
# --skip-unlabeled leaves the unlabeled soundscapes out of the unzip (2024: unlabeled_soundscapes/; 2025/2026: the
# train_soundscapes/ files without labels); the CLI can only fetch the whole archive.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
skip_unlabeled=0
config="$here/config.ini"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-unlabeled) skip_unlabeled=1 ;;
    --config) config="${2:?--config needs a file}"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (known: --skip-unlabeled, --config FILE)" >&2; exit 2 ;;
    *) args+=("$1") ;;
  esac
  shift
done

config_value() {  # $1 section, $2 key: the value in $config, empty when absent
  [ -f "$config" ] || return 0
  python3 - "$config" "$1" "$2" <<'PY'
import configparser, sys
parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
parser.read(sys.argv[1], encoding="utf-8")
print(parser.get(sys.argv[2], sys.argv[3], fallback="").strip())
PY
}

if [ ${#args[@]} -ge 1 ]; then
  slug="${args[0]}"
  target="${args[1]:-data/$slug}"
else
  slug="$(config_value data competition)"
  slug="${slug:-birdclef-2024}"
  target="$(config_value paths data_dir)"
  target="${target:-data/$slug}"
fi
# What a complete download holds: 2025 and later editions have train.csv, 2021-2024 train_metadata.csv.
case "$slug" in
  birdclef-202[1-4]) marker="train_metadata.csv" ;;
  *) marker="train.csv" ;;
esac
zip="$target/$slug.zip"

if [ -f "$target/$marker" ] && [ ! -f "$zip" ]; then
  echo "$target already holds $slug ($marker found); nothing to download."
  exit 0
fi

kaggle_cli="$(command -v kaggle || true)"
[ -z "$kaggle_cli" ] && [ -x "$here/.venv/bin/kaggle" ] && kaggle_cli="$here/.venv/bin/kaggle"
if [ -z "$kaggle_cli" ]; then
  echo "The Kaggle CLI is not installed: pip install 'kaggle>=2' (Python >= 3.11), or run:" >&2
  echo "  bash tools/venv.sh ./download_data.sh" >&2
  exit 2
fi
cli_version="$("$kaggle_cli" --version 2>/dev/null | grep -oE '[0-9]+(\.[0-9]+)+' | head -1 || true)"
if [ "${cli_version%%.*}" = "1" ]; then
  echo "Warning: Kaggle CLI $cli_version: 1.x ignores KAGGLE_API_TOKEN, access_token and OAuth logins;" >&2
  echo "pip install 'kaggle>=2' (needs Python >= 3.11) if it asks for credentials you have." >&2
fi

zip_ok() {  # every member's CRC checks out (reads the whole archive)
  python3 -c 'import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() is not None)' "$1" >/dev/null 2>&1
}

mkdir -p "$target"
if [ -f "$zip" ] && zip_ok "$zip"; then
  echo "Reusing the complete $zip from an earlier run."
else
  [ -f "$zip" ] && echo "Resuming the interrupted download of $zip ($(wc -c <"$zip") bytes so far)."
  echo "Downloading $slug into $target (BirdCLEF 2024 is ~23 GB, 2025 ~12 GB) ..."
  out_log="$(mktemp)"
  err_log="$(mktemp)"
  trap 'rm -f "$out_log" "$err_log"' EXIT
  # The partial archive stays in place: the CLI resumes it with an HTTP Range request.
  if ! "$kaggle_cli" competitions download "$slug" -p "$target" > >(tee "$out_log") 2> >(tee "$err_log" >&2); then
    sleep 0.2  # let tee finish writing the logs
    if grep -qiE "authentication required|401|unauthori[sz]ed" "$out_log" "$err_log"; then
      cat >&2 <<MSG
Kaggle needs valid credentials (401 / "Authentication required"). Any one of:
  kaggle auth login                                  (OAuth in a browser; cached in ~/.kaggle/credentials.json)
  export KAGGLE_API_TOKEN=<token>                     (or save the token to ~/.kaggle/access_token)
  ~/.kaggle/kaggle.json, or KAGGLE_USERNAME and KAGGLE_KEY (legacy keys)
Create a token at https://www.kaggle.com/settings (API section). Without Kaggle data,
python train_classifier.py runs on the embedded demo dataset.
MSG
      exit 2
    elif grep -qiE "403|forbidden" "$err_log"; then
      echo "Kaggle refused the download (403): accept the rules at https://www.kaggle.com/competitions/$slug/rules" >&2
      echo "with the account of these credentials, then run this script again." >&2
      exit 3
    elif grep -qiE "404|not found" "$err_log"; then
      echo "No competition '$slug' on Kaggle (404): check the slug (birdclef-2024, birdclef-2025, birdclef-2026)." >&2
      exit 4
    fi
    echo "The download failed, probably the network (no answer from kaggle.com). Run this script again:" >&2
    echo "the partial $zip is kept and the Kaggle CLI resumes it." >&2
    exit 5
  fi
  if ! zip_ok "$zip"; then
    echo "The downloaded $zip is damaged; it was removed. Run this script again to fetch it anew." >&2
    rm -f "$zip"
    exit 6
  fi
fi

echo "Unzipping $zip ..."
python3 - "$zip" "$target" "$skip_unlabeled" <<'PY'
import csv, io, sys, zipfile
from pathlib import Path

archive, target, skip = Path(sys.argv[1]), Path(sys.argv[2]).resolve(), sys.argv[3] == "1"
escaped, written, skipped = [], 0, 0
with zipfile.ZipFile(archive) as z:
    labelled = set()  # 2026: train soundscapes with labelled windows are kept by --skip-unlabeled
    if "train_soundscapes_labels.csv" in z.namelist():
        with z.open("train_soundscapes_labels.csv") as f:
            labelled = {row["filename"] for row in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"))}
    for member in z.infolist():
        destination = (target / member.filename).resolve()
        if not destination.is_relative_to(target):  # absolute paths or '..': refuse, never write outside
            escaped.append(member.filename)
            continue
        folder, _, name = member.filename.partition("/")
        if skip and name and (folder == "unlabeled_soundscapes"
                              or (folder == "train_soundscapes" and name not in labelled)):
            skipped += 1
            continue
        z.extract(member, target)
        written += 1
print(f"{written} files unzipped into {target}" + (f" ({skipped} unlabeled soundscapes left out)" if skip else ""))
if escaped:
    print(f"refused {len(escaped)} archive entries pointing outside {target}: {escaped[:3]}", file=sys.stderr)
PY
if [ ! -f "$target/$marker" ]; then
  echo "Unzipped, but $target/$marker is missing: the archive holds no $slug data in the Kaggle layout" >&2
  echo "(files: $(ls "$target" | head -10 | tr '\n' ' '))." >&2
  exit 1
fi
rm -f "$zip"
echo "Done: $target"
