"""scripts/compose-images pins every image docker-compose.yaml runs to a digest: run against a
recording stand-in for the docker client (no engine needed)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# Answers like the engine after a push: the pushed name's digest (and an unrelated one).
_FAKE_DOCKER = r"""#!/bin/bash
printf '%s\n' "$*" >> "$CALLS"
if [[ $1 == image && $2 == inspect && $3 == --format ]]; then
  ref=${@: -1}
  echo "elsewhere/other@sha256:$(printf 'x%s' "$ref" | sha256sum | cut -c1-64)"
  echo "${ref%:*}@sha256:$(printf '%s' "$ref" | sha256sum | cut -c1-64)"
elif [[ $1 == login ]]; then
  cat > "$CALLS.stdin"
fi
"""


def _pin(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    fake = tmp_path / "docker"
    fake.write_text(_FAKE_DOCKER)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    result = subprocess.run([REPO / "scripts" / "compose-images", "pin"], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "RICE_DOCKER_BIN": str(fake), "CALLS": str(calls),
                                 **env})
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_pin_prints_a_digest_for_every_image_the_stack_runs(tmp_path):
    result, calls = _pin(tmp_path, RICE_REGISTRY="127.0.0.1:5999", RICE_REGISTRY_USER="rice",
                         RICE_REGISTRY_PASSWORD="not-on-a-command-line",
                         RICE_DOCKER_CLI_IMAGE="rice-docker-cli:local")
    assert result.returncode == 0, result.stderr
    printed = dict(line.split("=", 1) for line in result.stdout.split())
    compose = (REPO / "docker-compose.yaml").read_text()
    needed = set(re.findall(r"\$\{([A-Z_]+_IMAGE):\?", compose))
    assert needed <= set(printed), needed - set(printed)
    for variable, reference in printed.items():
        assert re.fullmatch(r"127\.0\.0\.1:5999/[a-z0-9./-]+@sha256:[0-9a-f]{64}", reference), \
            (variable, reference)
    assert printed["RICE_DOCKER_CLI_IMAGE"].startswith("127.0.0.1:5999/rice-docker-cli@")
    # Every image went to the registry before its digest was read; the password only on stdin.
    assert "push 127.0.0.1:5999/rice-mlops/airflow:3.3.2" in calls
    assert not any("not-on-a-command-line" in call for call in calls)
    assert (tmp_path / "calls.stdin").read_text() == "not-on-a-command-line"
    services = yaml.safe_load(compose)["services"]
    assert {s["image"].split(":")[0].strip("${") for s in services.values()} <= set(printed)


def test_pin_without_a_registry_is_refused_naming_the_variable(tmp_path):
    result, calls = _pin(tmp_path, RICE_REGISTRY="")
    assert result.returncode == 2 and "RICE_REGISTRY" in result.stderr
    assert calls == [] and result.stdout == ""


def test_an_already_pinned_cli_image_is_left_alone(tmp_path):
    pinned = "docker:27-cli@sha256:" + "b" * 64
    result, _ = _pin(tmp_path, RICE_REGISTRY="127.0.0.1:5999", RICE_DOCKER_CLI_IMAGE=pinned)
    assert result.returncode == 0, result.stderr
    assert "RICE_DOCKER_CLI_IMAGE" not in result.stdout
