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
SECRETS = {"POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "REDIS_PASSWORD",
           "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD",
           "AIRFLOW_WEBHOOK_PASSWORD", "GITHUB_WEBHOOK_SECRET", "REGISTRY_PASSWORD",
           "MLFLOW_ADMIN_PASSWORD", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_FLASK_SECRET_KEY",
           "AIRFLOW_PIPELINE_PASSWORD"}
WORKERS = {"airflow-worker", "airflow-worker-docker", "airflow-worker-training"}
SERVICES = COMPOSE["services"]


def test_the_stack_has_every_component():
    assert {"postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
            "airflow-worker-docker", "mlflow", "mlflow-users", "registry"} <= set(SERVICES)
    assert SERVICES["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == \
        "CeleryExecutor"
    server = (REPO / "docker" / "mlflow-server.sh").read_text()
    assert "--app-name basic-auth" in server and "default_permission = READ" in server
    assert "--allowed-hosts" in server and "--artifacts-destination" in server
    base = (REPO / SERVICES["airflow-scheduler"]["build"]["dockerfile"]).read_text()
    assert "ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11" in base
    assert "FROM ${AIRFLOW_BASE_IMAGE}" in base
    assert "requirements/lock.txt" in base


def test_the_webhook_proxy_is_published_on_loopback_and_proxies_the_api_server():
    proxy = SERVICES["webhook-proxy"]
    assert proxy["ports"] == ["127.0.0.1:${WEBHOOK_PORT:-8081}:8080"]
    assert proxy["restart"] == "always" and "healthcheck" in proxy
    # What nginx does with the file: tests/integration/test_webhook_proxy.py.
    conf = (REPO / "docker" / "webhook-proxy.conf").read_text()
    assert re.findall(r"location\s+([^{]+?)\s*\{", conf) == \
        ["= /webhooks/github", "@unavailable", "@limited", "/"]
    assert "set $api_server airflow-apiserver:8080;" in conf  # the compose service's name


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


def test_only_the_docker_worker_reaches_the_engine_and_shares_the_staging_path():
    socket = "/var/run/docker.sock:/var/run/docker.sock"
    assert {name for name, service in SERVICES.items()
            if socket in service.get("volumes", [])} == {"airflow-worker-docker"}
    assert {name for name, service in SERVICES.items() if service.get("group_add")} == \
        {"airflow-worker-docker"}
    docker = SERVICES["airflow-worker-docker"]
    assert docker["command"].startswith("celery worker --queues ${RICE_DOCKER_QUEUE:-docker}")
    assert SERVICES["airflow-scheduler"]["environment"]["RICE_DOCKER_QUEUE"] == \
        "${RICE_DOCKER_QUEUE:-docker}"
    for worker in ("airflow-worker", "airflow-worker-docker"):
        volumes = SERVICES[worker]["volumes"]
        staging = [v for v in volumes if v.startswith("${RICE_STAGING_DIR")]
        source, target = re.findall(r"\$\{RICE_STAGING_DIR[^}]*\}", staging[0])
        assert source == target  # same path on the host and in the worker
        data = [v for v in volumes if v.startswith("${RICE_DATA_DIR")]
        assert data and data[0].endswith(
            ":" + SERVICES[worker]["environment"]["RICE_DATA_DIR"] + ":ro")


def test_only_the_docker_worker_mounts_the_release_directory():
    """Issue 20: what the release zone builds from lives where no other zone can write."""
    mounting = {name for name, service in SERVICES.items()
                if any("RICE_RELEASE_DIR" in str(v) for v in service.get("volumes", []))}
    assert mounting == {"airflow-worker-docker"}, \
        f"release zone broken: {sorted(mounting - {'airflow-worker-docker'})} mount its directory"
    docker = SERVICES["airflow-worker-docker"]
    release = [v for v in docker["volumes"] if v.startswith("${RICE_RELEASE_DIR")]
    source, target = re.findall(r"\$\{RICE_RELEASE_DIR[^}]*\}", release[0])
    assert source == target  # a DockerOperator bind source is a host path
    assert docker["environment"]["RICE_RELEASE_DIR"] == source


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_no_secret_value_is_written_in_the_file(secret):
    assert not re.search(rf"{secret}\s*[:=]\s*['\"]?[A-Za-z0-9]", TEXT.replace(
        f"{secret}: ${{{secret}", ""))


def _holders(variable: str) -> set[str]:
    return {name for name, service in SERVICES.items()
            if any(f"${{{variable}" in str(value)
                   for value in (service.get("environment") or {}).values())}


def test_each_secret_reaches_only_the_services_that_use_it():
    assert _holders("GITHUB_TOKEN") == {"airflow-worker"}
    assert _holders("REGISTRY_PASSWORD") == {"airflow-worker-docker", "registry-init"}
    assert _holders("GITHUB_WEBHOOK_SECRET") == {"airflow-apiserver"}
    assert _holders("AIRFLOW_WEBHOOK_PASSWORD") == {"airflow-apiserver", "airflow-init"}
    assert _holders("AIRFLOW_ADMIN_PASSWORD") == {"airflow-init"}
    assert _holders("AIRFLOW_PIPELINE_PASSWORD") == {"airflow-init", "airflow-worker"}
    key_holders = {name for name, service in SERVICES.items()
                   if "RICE_SIGNING_KEY_HOST_FILE" in str(service.get("volumes"))}
    assert key_holders == {"airflow-worker-docker"}
    # The workers run tasks with a token the scheduler signed: they never hold the key.
    assert _holders("AIRFLOW_JWT_SECRET") == {"airflow-apiserver", "airflow-scheduler",
                                              "airflow-dag-processor", "airflow-triggerer"}
    assert _holders("POSTGRES_PASSWORD") == {"postgres"}
    assert _holders("MLFLOW_DB_PASSWORD") == {"postgres", "mlflow"}
    assert _holders("REDIS_PASSWORD") == {"redis", "airflow-scheduler"} | WORKERS
    assert _holders("MLFLOW_ADMIN_PASSWORD") == {"mlflow", "mlflow-users"}
    assert _holders("MLFLOW_FLASK_SECRET_KEY") == {"mlflow"}
    assert _holders("MLFLOW_PIPELINE_PASSWORD") == {"mlflow-users"} | WORKERS
    airflow_db = _holders("AIRFLOW_DB_PASSWORD")
    assert "mlflow" not in airflow_db and "postgres" in airflow_db


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_no_secret_on_a_command_line(name):
    """Arguments are what `ps` and `docker inspect` show: secrets travel in the environment."""
    service = SERVICES[name]
    argv = " ".join(str(service.get(key, "")) for key in ("command", "entrypoint"))
    argv += str((service.get("healthcheck") or {}).get("test", ""))
    referenced = set(re.findall(r"\$\$?\{?([A-Z_][A-Z0-9_]*)", argv))
    secret_values = SECRETS | {"REDISCLI_AUTH", "MLFLOW_AUTH_ADMIN_PASSWORD"}
    # A shell builtin may read one from the environment ($$VAR): never compose (${VAR}).
    assert not re.search(r"(?<!\$)\$\{(" + "|".join(secret_values) + r")", argv), name
    for variable in referenced & secret_values:
        assert f"$${variable}" in argv or f"$${{{variable}" in argv, (name, variable)


def test_every_third_party_image_can_be_pinned_by_digest():
    for name, service in SERVICES.items():
        image = service.get("image", "")
        assert image.startswith("${") or image.startswith("rice-mlops/"), (name, image)
    dockerfile = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert "FROM ${AIRFLOW_BASE_IMAGE}" in dockerfile


def test_redis_and_the_databases_ask_for_passwords():
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:${REDIS_PASSWORD")
    assert "requirepass" in SERVICES["redis"]["command"][0]
    init = (REPO / "docker" / "postgres-init.sh").read_text()
    assert "NOSUPERUSER" in init and "REVOKE ALL ON DATABASE airflow, mlflow" in init
    assert SERVICES["postgres"]["environment"]["POSTGRES_USER"] == "postgres"
    assert "airflow:${AIRFLOW_DB_PASSWORD" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    mlflow = SERVICES["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert mlflow.startswith("postgresql://mlflow:${MLFLOW_DB_PASSWORD")
