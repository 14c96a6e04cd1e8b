#!/usr/bin/env bash
# The test suite: lint, then pytest. Services the tests need are started by their fixtures
# (through the scripts in this folder) and stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
