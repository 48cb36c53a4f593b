#!/usr/bin/env bash
# Run a command inside the project's virtual environment, creating it first when needed.
#
#   bash tools/venv.sh [--dev] COMMAND [ARGS...]
#
# The environment lives in $BIRDCLEF_VENV_ROOT (default ~/.cache/birdclef-pipeline/venvs)/<hash>, where <hash>
# is the hash of requirements.txt, requirements-hoplite.txt and requirements-dev.txt: a changed requirement builds a
# new environment, an unchanged one is reused at once (CI reruns, fresh clones). --dev adds the test requirements.
# .venv in the repository points at the environment in use.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dev=0
if [ "${1:-}" = "--dev" ]; then dev=1; shift; fi
if [ $# -eq 0 ]; then echo "usage: bash tools/venv.sh [--dev] COMMAND [ARGS...]" >&2; exit 2; fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "tools/venv.sh: Python >= 3.11 is needed ($python is $("$python" --version 2>&1 || echo missing)):" >&2
  echo "the Kaggle CLI 2.x (kaggle>=2, which reads KAGGLE_API_TOKEN and OAuth logins) installs only there;" >&2
  echo "set PYTHON=/path/to/python3.11 (or newer) and run again." >&2
  exit 2
fi
hash="$(cat "$here/requirements.txt" "$here/requirements-hoplite.txt" "$here/requirements-dev.txt" | sha256sum | cut -c1-16)"
root="${BIRDCLEF_VENV_ROOT:-$HOME/.cache/birdclef-pipeline/venvs}"
venv="$root/$hash"

install() {  # $1 = requirements file, $2 = marker name, $3 = extra pip option; a marker is written only after a
  # complete install
  if [ ! -f "$venv/.installed-$2" ]; then
    echo "tools/venv.sh: installing $(basename "$1") into $venv (first time only; torch is a large download)" >&2
    "$venv/bin/python" -m pip install --disable-pip-version-check -q ${3:-} -r "$1" >&2
    touch "$venv/.installed-$2"
  fi
}

if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$root"
  "$python" -m venv "$venv"
fi
install "$here/requirements.txt" runtime
install "$here/requirements-hoplite.txt" hoplite --no-deps
if [ $dev = 1 ]; then install "$here/requirements-dev.txt" dev; fi
ln -sfn "$venv" "$here/.venv" 2>/dev/null || true

export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
exec "$@"
