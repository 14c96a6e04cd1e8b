"""`docker-compose config` accepts the stack with a complete .env (the tool is installed by
scripts/docker-engine, which the docker_engine fixture runs)."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.paths import REPO

pytestmark = pytest.mark.integration


def _env_file(tmp_path, **overrides):
    lines = []
    for line in (REPO / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            value = overrides.get(key, value or "x")
            if value is not None:
                lines.append(f"{key}={value}")
    path = tmp_path / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_compose_config_is_valid(docker_engine, tmp_path):
    env = _env_file(tmp_path, DOCKER_GID="999")
    result = subprocess.run(["docker-compose", "--env-file", str(env), "-f",
                             str(REPO / "docker-compose.yaml"), "config", "-q"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_a_missing_secret_is_refused_with_its_name(docker_engine, tmp_path):
    env = _env_file(tmp_path, DOCKER_GID="999", AIRFLOW_JWT_SECRET=None)
    result = subprocess.run(["docker-compose", "--env-file", str(env), "-f",
                             str(REPO / "docker-compose.yaml"), "config", "-q"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    assert "AIRFLOW_JWT_SECRET" in result.stderr
