#!/usr/bin/env bash
# Build .venv from nothing with the locked versions. Idempotent: a stamp records which lock
# file and project metadata the environment was built from, and nothing is done when they match.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python=${PYTHON:-python3.11}
if ! command -v "$python" >/dev/null; then
  echo "setup: $python not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: $python is $("$python" --version 2>&1), Python 3.11 is required" >&2
  exit 1
fi
want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -c1-16)
stamp=.venv/.setup-$want
if [[ -f $stamp ]]; then exit 0; fi
echo "setup: building .venv from requirements/lock.txt"
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip>=24"
.venv/bin/python -m pip install --quiet -r requirements/lock.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
rm -f .venv/.setup-*
touch "$stamp"
echo "setup: .venv ready ($(.venv/bin/python --version))"
