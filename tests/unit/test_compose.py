"""docker-compose.yaml: every service, volume, file and variable it references exists, secrets
come only from .env, ports stay on loopback, long-running services have health checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
TEXT = (REPO / "docker-compose.yaml").read_text()
ENV_EXAMPLE = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
SECRETS = {"POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
           "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_WEBHOOK_PASSWORD", "GITHUB_WEBHOOK_SECRET",
           "REGISTRY_PASSWORD"}
SERVICES = COMPOSE["services"]


def test_the_stack_has_every_component():
    assert {"postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "mlflow",
            "registry"} <= set(SERVICES)
    assert SERVICES["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == \
        "CeleryExecutor"
    assert "--allowed-hosts" in SERVICES["mlflow"]["command"]
    assert "--artifacts-destination" in SERVICES["mlflow"]["command"]
    base = (REPO / SERVICES["airflow-scheduler"]["build"]["dockerfile"]).read_text()
    assert "ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11" in base
    assert "FROM ${AIRFLOW_BASE_IMAGE}" in base
    assert "requirements/lock.txt" in base


def test_every_dependency_and_named_volume_exists():
    volumes = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, (name, dependency)
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), (name, source)
            elif not source.startswith(("/", "$")):
                assert source in volumes, (name, source)


def test_every_variable_is_documented_and_secrets_have_no_default():
    variables = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", TEXT))
    assert variables - set(ENV_EXAMPLE) == set()
    for secret in SECRETS:
        assert secret in variables
        assert ENV_EXAMPLE[secret] == "", f"{secret} must have no usable default"
        uses = re.findall(r"\$\{" + secret + r"(?![A-Z0-9_])(:?[?-])?", TEXT)
        assert uses and all(use == ":?" for use in uses), secret


def test_ports_bind_to_loopback_and_services_have_health_checks():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        if service.get("restart") == "always":
            assert "healthcheck" in service, name


def test_workers_reach_the_docker_socket_and_share_the_staging_path():
    worker = SERVICES["airflow-worker"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in worker["volumes"]
    assert worker["group_add"]
    staging = [v for v in worker["volumes"] if v.startswith("${RICE_STAGING_DIR")]
    assert staging and staging[0].split(":", 1)[0] == "${RICE_STAGING_DIR"
    source, target = re.findall(r"\$\{RICE_STAGING_DIR[^}]*\}", staging[0])
    assert source == target  # same path on the host and in the worker
    data = [v for v in worker["volumes"] if v.startswith("${RICE_DATA_DIR")]
    assert data and data[0].endswith(":" + worker["environment"]["RICE_DATA_DIR"] + ":ro")


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_no_secret_value_is_written_in_the_file(secret):
    assert not re.search(rf"{secret}\s*[:=]\s*['\"]?[A-Za-z0-9]", TEXT.replace(
        f"{secret}: ${{{secret}", ""))


def test_each_secret_reaches_only_the_services_that_use_it():
    def holders(variable: str) -> set[str]:
        return {name for name, service in SERVICES.items()
                if any(f"${{{variable}" in str(value)
                       for value in (service.get("environment") or {}).values())}

    assert holders("GITHUB_TOKEN") == {"airflow-worker"}
    assert holders("REGISTRY_PASSWORD") == {"airflow-worker", "registry-init"}
    assert holders("GITHUB_WEBHOOK_SECRET") == {"airflow-apiserver"}
    assert holders("AIRFLOW_WEBHOOK_PASSWORD") == {"airflow-apiserver", "airflow-init"}
    assert holders("AIRFLOW_ADMIN_PASSWORD") == {"airflow-init"}
