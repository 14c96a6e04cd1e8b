#!/usr/bin/env bash
# The test suite: lint (scripts/lint.sh), then pytest. Services the tests need are started by
# their fixtures (through the scripts in this folder) and stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lint.sh
exec .venv/bin/pytest "$@"
