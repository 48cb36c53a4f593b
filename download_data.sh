#!/usr/bin/env bash
# Download a BirdCLEF competition's data with the Kaggle CLI and unzip it (Kaggle layout).
#
#   ./download_data.sh [SLUG] [TARGET_DIR]      # defaults: birdclef-2024  data/<SLUG>
#
# Credentials (never printed): KAGGLE_API_TOKEN, ~/.kaggle/access_token, or the legacy ~/.kaggle/kaggle.json /
# KAGGLE_USERNAME + KAGGLE_KEY. The competition's rules must be accepted on kaggle.com first.
set -euo pipefail

slug="${1:-birdclef-2024}"
target="${2:-data/$slug}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ -f "$target/train_metadata.csv" ]; then
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
echo "Downloading $slug into $target (BirdCLEF 2024 is ~23 GB) ..."
if ! "$kaggle_cli" competitions download -c "$slug" -p "$target"; then
  echo "Download failed. 401/403: accept the competition rules at https://www.kaggle.com/competitions/$slug/rules" >&2
  echo "and check your token; otherwise check the network connection." >&2
  exit 1
fi
zip="$target/$slug.zip"
echo "Unzipping $zip ..."
# Python's zipfile drops absolute paths and '..' components, so nothing lands outside the target folder.
python3 -m zipfile -e "$zip" "$target"
rm -f "$zip"
[ -f "$target/train_metadata.csv" ] || { echo "Unzipped, but $target/train_metadata.csv is missing" >&2; exit 1; }
echo "Done: $target"
