#!/usr/bin/env bash
# Lint: shellcheck on every shell script (Debian's package, installed when missing and root),
# then ruff on the Python, then the import contracts of pyproject.toml (lint-imports), then the
# Prometheus alert rules (promtool check and test, unpacked from Debian's package when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/state.sh
need shellcheck shellcheck
# Every script with a shell's #! line, and the library they source.
mapfile -t shell_scripts < <(grep -rlE '^#!(/usr/bin/env (ba)?sh|/bin/(ba)?sh)' scripts docker .ci \
  benchmarks | sort)
shellcheck -x "${shell_scripts[@]}" scripts/lib/*.sh
ruff=.venv/bin/ruff
[[ -x $ruff ]] || ruff=ruff  # a worktree without its own virtualenv: ruff from PATH
"$ruff" check .
# The layout is the zones; [tool.importlinter] keeps it so (the package imported from include/).
lint_imports=.venv/bin/lint-imports
[[ -x $lint_imports ]] || lint_imports=lint-imports
PYTHONPATH="$PWD/include${PYTHONPATH:+:$PYTHONPATH}" "$lint_imports" --no-cache --no-logo
# The compose stack's alert rules: valid, and each alert firing when and only when it should.
promtool=$(tool promtool prometheus)
"$promtool" check rules docker/prometheus/rules/*.yml
"$promtool" test rules docker/prometheus/tests/*.yml
# Alertmanager's checker, for the tests that check the rendered alertmanager.yml.
tool amtool prometheus-alertmanager >/dev/null
