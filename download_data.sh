#!/usr/bin/env bash
# Download a BirdCLEF competition's data with the Kaggle CLI (2.x) and unzip it (Kaggle layout).
#
#   ./download_data.sh [--skip-unlabeled] [SLUG] [TARGET_DIR]   # defaults: birdclef-2024  data/<SLUG>
#
# SLUG: birdclef-2024 (default), birdclef-2023, birdclef-2025, ... Credentials (never printed): KAGGLE_API_TOKEN,
# ~/.kaggle/access_token, or the legacy ~/.kaggle/kaggle.json / KAGGLE_USERNAME + KAGGLE_KEY. The competition's
# rules must be accepted on kaggle.com first. Idempotent: a complete download is not fetched again, a complete
# zip left by an interrupted run is unzipped without downloading, a broken one is removed and fetched again.
# --skip-unlabeled leaves unlabeled_soundscapes/ out of the unzip (the CLI can only fetch the whole archive).
set -euo pipefail

skip_unlabeled=0
args=()
for arg in "$@"; do
  case "$arg" in
    --skip-unlabeled) skip_unlabeled=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    -*) echo "unknown option $arg (known: --skip-unlabeled)" >&2; exit 2 ;;
    *) args+=("$arg") ;;
  esac
done
slug="${args[0]:-birdclef-2024}"
target="${args[1]:-data/$slug}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
zip="$target/$slug.zip"

if [ -f "$target/train_metadata.csv" ] && [ ! -f "$zip" ]; then
  echo "$target already holds $slug (train_metadata.csv found); nothing to download."
  exit 0
fi

config_dir="${KAGGLE_CONFIG_DIR:-$HOME/.kaggle}"
if [ -z "${KAGGLE_API_TOKEN:-}" ] && [ ! -f "$config_dir/access_token" ] && [ ! -f "$config_dir/kaggle.json" ] \
   && { [ -z "${KAGGLE_USERNAME:-}" ] || [ -z "${KAGGLE_KEY:-}" ]; }; then
  cat >&2 <<MSG
No Kaggle credentials found. Create an API token at https://www.kaggle.com/settings (API section), then either
  export KAGGLE_API_TOKEN=<token>          or save it to $config_dir/access_token
  (legacy: $config_dir/kaggle.json, or KAGGLE_USERNAME and KAGGLE_KEY)
and accept the rules of https://www.kaggle.com/competitions/$slug before downloading.
Without Kaggle data, python train_classifier.py runs on the embedded demo dataset.
MSG
  exit 2
fi

kaggle_cli="$(command -v kaggle || true)"
[ -z "$kaggle_cli" ] && [ -x "$here/.venv/bin/kaggle" ] && kaggle_cli="$here/.venv/bin/kaggle"
if [ -z "$kaggle_cli" ]; then
  echo "The Kaggle CLI is not installed: pip install kaggle (or run: bash tools/venv.sh ./download_data.sh)" >&2
  exit 2
fi

mkdir -p "$target"
if [ -f "$zip" ] && ! python3 -m zipfile -t "$zip" >/dev/null 2>&1; then
  echo "Removing the incomplete $zip left by an interrupted download."
  rm -f "$zip"
fi
if [ -f "$zip" ]; then
  echo "Reusing the complete $zip from an earlier run."
else
  echo "Downloading $slug into $target (BirdCLEF 2024 is ~23 GB) ..."
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  if ! "$kaggle_cli" competitions download -c "$slug" -p "$target" 2> >(tee "$log" >&2); then
    sleep 0.2  # let tee finish writing the log
    if grep -qiE "403|forbidden|rules" "$log"; then
      echo "Kaggle refused the download (403): accept the rules at https://www.kaggle.com/competitions/$slug/rules" >&2
      echo "with the account of this token, then run this script again." >&2
      exit 3
    elif grep -qiE "401|unauthori[sz]ed|invalid (token|credentials)" "$log"; then
      echo "Kaggle rejected the credentials (401): create a new API token at https://www.kaggle.com/settings." >&2
      exit 2
    elif grep -qiE "404|not found" "$log"; then
      echo "No competition '$slug' on Kaggle (404): check the slug (e.g. birdclef-2024)." >&2
      exit 4
    fi
    echo "The download failed, probably the network (no answer from kaggle.com); run this script again:" >&2
    echo "an interrupted archive is detected and fetched again." >&2
    exit 5
  fi
fi

echo "Unzipping $zip ..."
python3 - "$zip" "$target" "$skip_unlabeled" <<'PY'
import sys, zipfile
from pathlib import Path

archive, target, skip = Path(sys.argv[1]), Path(sys.argv[2]).resolve(), sys.argv[3] == "1"
escaped, written = [], 0
with zipfile.ZipFile(archive) as z:
    for member in z.infolist():
        destination = (target / member.filename).resolve()
        if not destination.is_relative_to(target):  # absolute paths or '..': refuse, never write outside
            escaped.append(member.filename)
            continue
        if skip and member.filename.startswith("unlabeled_soundscapes/"):
            continue
        z.extract(member, target)
        written += 1
print(f"{written} files unzipped into {target}")
if escaped:
    print(f"refused {len(escaped)} archive entries pointing outside {target}: {escaped[:3]}", file=sys.stderr)
PY
[ -f "$target/train_metadata.csv" ] || { echo "Unzipped, but $target/train_metadata.csv is missing" >&2; exit 1; }
rm -f "$zip"
echo "Done: $target"
