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
locks=(requirements/installer.txt requirements/lock.txt requirements/dev.txt)
want=$(cat "${locks[@]}" pyproject.toml | sha256sum | cut -c1-16)
stamp=.venv/.setup-$want
if [[ -f $stamp ]]; then exit 0; fi
echo "setup: building .venv from requirements/lock.txt and dev.txt"
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --require-hashes: every file pip downloads must have a sha256 the lock lists, so a changed
# package on the index (or a lock edited by hand) stops the set-up instead of entering .venv.
install() {
  if ! .venv/bin/python -m pip install --quiet --require-hashes "$@" >"$log" 2>&1; then
    if grep -q "DO NOT MATCH THE HASHES\|Hashes are required\|hash-checking mode" "$log"; then
      local where
      where=$(grep -o 'from -r [^ )]*' "$log" | cut -d' ' -f3 | sort -u | paste -sd' ')
      echo "setup: a package does not match the sha256 pinned in ${where:-$*}:" >&2
      grep -E "^ +[A-Za-z0-9_.-]+==|Expected sha256|Got +[0-9a-f]{64}|Hashes are required|--hash=" "$log" | head -n 20 >&2
      echo "setup: the lock was edited by hand or the package index served other content." \
           "Find out which, then regenerate the hashes with \`make lock\`." >&2
    else
      tail -n 30 "$log" >&2
      echo "setup: pip install -r ${*: -1} failed (output above)" >&2
    fi
    exit 1
  fi
}
install -r requirements/installer.txt
install -r requirements/lock.txt -r requirements/dev.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
rm -f .venv/.setup-*
touch "$stamp"
echo "setup: .venv ready ($(.venv/bin/python --version))"
