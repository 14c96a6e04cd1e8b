#!/usr/bin/env bash
# Known vulnerabilities in every package the lock and dev.txt pin (pip-audit, no install: the
# files are fully pinned and hashed). Where the vulnerability database cannot be reached (an
# offline CI host), the audit is skipped and says so; a finding fails.
#   scripts/audit.sh   (pip-audit from .venv, or from PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
audit=.venv/bin/pip-audit
[[ -x $audit ]] || audit=$(command -v pip-audit) ||
  { echo "audit: pip-audit is not installed (it is in requirements/dev.txt: make setup)" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
"$audit" --no-deps --disable-pip --progress-spinner off -r requirements/lock.txt \
  -r requirements/dev.txt >"$out" 2>&1 || status=$?
if (( status != 0 )) && grep -qiE "ConnectionError|ConnectTimeout|Max retries exceeded|Name or service not known|Temporary failure in name resolution|Network is unreachable|ServiceError" "$out"; then
  echo "audit: SKIPPED: the vulnerability database is not reachable from this host:"
  grep -iE "error" "$out" | head -n 3
  exit 0
fi
cat "$out"
exit "$status"
