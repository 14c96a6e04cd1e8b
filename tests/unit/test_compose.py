"""docker-compose.yaml: every service, volume, file and variable it references exists, secrets
come only from .env and reach only the services that use them, never on a command line,
ports stay on loopback, long-running services have health checks, and every image is pinned
by digest. The trust zones the file draws: test_compose_zones.py."""

from __future__ import annotations

import re

import pytest

from tests.helpers.compose_file import (
    COMPOSE,
    COMPUTE_WORKERS,
    CONTROL_PLANE,
    ENV_EXAMPLE,
    SECRETS,
    SERVICES,
    TEXT,
    WORKERS,
)
from tests.helpers.paths import REPO


def test_the_stack_has_every_component():
    assert {"postgres", "redis", "redis-release", "airflow-init", "airflow-apiserver",
            "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
            "airflow-worker-docker", "mlflow", "mlflow-users", "registry"} <= set(SERVICES)
    assert SERVICES["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == \
        "CeleryExecutor,release:rice_mlops.stages.release_executor.ReleaseCeleryExecutor"
    server = (REPO / "docker" / "mlflow-server.sh").read_text()
    assert "--app-name basic-auth" in server and "default_permission = READ" in server
    assert "--allowed-hosts" in server and "--artifacts-destination" in server
    base = (REPO / "docker" / "airflow.Dockerfile").read_text()
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
            # The edge alone may be given another address (RICE_PUBLISH_ADDRESS), and only
            # with its profile; loopback is its default too.
            prefix = "${RICE_PUBLISH_ADDRESS:-127.0.0.1}:" if name == "edge" else "127.0.0.1:"
            assert str(port).startswith(prefix), (name, port)
        if service.get("restart") == "always":
            assert "healthcheck" in service, name


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
    assert _holders("AIRFLOW_RELEASE_PASSWORD") == {"airflow-init", "airflow-worker-docker"}
    key_holders = {name for name, service in SERVICES.items()
                   if "RICE_SIGNING_KEY_HOST_FILE" in str(service.get("volumes"))}
    assert key_holders == {"airflow-worker-docker"}
    # The workers run tasks with a token the scheduler signed: they never hold the key.
    assert _holders("AIRFLOW_JWT_SECRET") == {"airflow-apiserver", "airflow-scheduler",
                                              "airflow-dag-processor", "airflow-triggerer"}
    assert _holders("POSTGRES_PASSWORD") == {"postgres"}
    assert _holders("MLFLOW_DB_PASSWORD") == {"postgres", "mlflow"}
    # The compute workers' broker is not the release worker's (issue 35): a queue on a shared
    # broker separates load, not trust.
    assert _holders("REDIS_PASSWORD") == {"redis", "airflow-scheduler"} | COMPUTE_WORKERS
    assert _holders("RELEASE_REDIS_PASSWORD") == {"redis-release", "airflow-scheduler",
                                                  "airflow-worker-docker"}
    assert _holders("MLFLOW_ADMIN_PASSWORD") == {"mlflow", "mlflow-users"}
    assert _holders("MLFLOW_FLASK_SECRET_KEY") == {"mlflow"}
    # Prometheus's login: rendered into its files by prometheus-init, and read back only by
    # the release worker, whose canary windows come from it.
    assert _holders("PROMETHEUS_PASSWORD") == {"prometheus-init", "airflow-worker-docker"}
    assert _holders("MLFLOW_PIPELINE_PASSWORD") == {"mlflow-users"} | WORKERS
    assert _holders("AIRFLOW_DB_PASSWORD") == CONTROL_PLANE | {"postgres"}
    assert _holders("AIRFLOW_FERNET_KEY") == CONTROL_PLANE


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


def _image_variable(name: str) -> str:
    image = SERVICES[name].get("image", "")
    found = re.fullmatch(r"\$\{([A-Z_]+_IMAGE):\?[^}]*\}", image)
    assert found, f"{name}: image {image!r} is not a required *_IMAGE variable"
    return found.group(1)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_image_is_pinned_by_digest(name):
    """No tag that can move: each image is a required variable with no default in the file or
    in .env.example, filled with name@sha256:... by scripts/compose-images, and nothing builds
    at `up` (a build would run whatever the base tag points at then)."""
    variable = _image_variable(name)
    assert ENV_EXAMPLE[variable] == "", (name, variable)
    assert "build" not in SERVICES[name], name
    assert variable in _PINNED, f"scripts/compose-images does not print {variable}"


def _printed_by_compose_images() -> set[str]:
    """The *_IMAGE variables `scripts/compose-images pin` prints (name@sha256 each)."""
    script = (REPO / "scripts" / "compose-images").read_text()
    loop = re.search(r"for var in ([a-z ]+); do\n\s+echo \"\$\{var\^\^\}_IMAGE=\$\(pinned", script)
    assert loop, "compose-images: the pinning loop moved"
    return {f"{word.upper()}_IMAGE" for word in loop.group(1).split()} | set(
        re.findall(r'echo "([A-Z_]+_IMAGE)=\$\(pinned', script))


_PINNED = _printed_by_compose_images()


def test_the_docker_tasks_cli_image_is_pinned_too():
    """The image the DockerOperator tasks run with the engine socket: required, no default."""
    for name in WORKERS:
        value = SERVICES[name]["environment"]["RICE_DOCKER_CLI_IMAGE"]
        assert re.fullmatch(r"\$\{RICE_DOCKER_CLI_IMAGE:\?[^}]*\}", value), (name, value)
    assert ENV_EXAMPLE["RICE_DOCKER_CLI_IMAGE"] == ""
    assert "RICE_DOCKER_CLI_IMAGE=$(pinned" in (REPO / "scripts" / "compose-images").read_text()


def test_the_serving_proxy_image_is_pinned_too():
    env = SERVICES["airflow-worker-docker"]["environment"]
    assert re.fullmatch(r"\$\{RICE_ROLLOUT_PROXY_IMAGE:\?[^}]*\}",
                        env["RICE_ROLLOUT_PROXY_IMAGE"])
    assert ENV_EXAMPLE["RICE_ROLLOUT_PROXY_IMAGE"] == ""
    assert "RICE_ROLLOUT_PROXY_IMAGE=$(pinned" in (REPO / "scripts" / "compose-images").read_text()


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


def test_training_has_the_least_cpu_weight():
    """Under contention the control plane and the webhook come before training (issue 25)."""
    services = COMPOSE["services"]
    training = services["airflow-worker-training"]["cpu_shares"]
    others = {name: service.get("cpu_shares", 1024) for name, service in services.items()
              if name != "airflow-worker-training"}
    assert 2 <= training < min(others.values()), (training, others)


def test_postgres_takes_logins_only_from_its_own_network(tmp_path):
    """docker/postgres-init.sh (psql stood in for) leaves pg_hba.conf with no catch-all host
    line: TCP logins only from `samenet`, and loopback, as initdb wrote it."""
    import os
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "psql").write_text("#!/bin/sh\ncat >/dev/null\n")
    (bin_dir / "psql").chmod(0o755)
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
                   "host all all all scram-sha-256\nhost  all  all  0.0.0.0/0  md5\n")
    subprocess.run(["bash", str(REPO / "docker" / "postgres-init.sh")], check=True,
                   env={"PATH": f"{bin_dir}:/usr/bin:/bin", "PGDATA": str(tmp_path),
                        "AIRFLOW_DB_PASSWORD": "a" * 16, "MLFLOW_DB_PASSWORD": "m" * 16})
    lines = [line.split() for line in hba.read_text().splitlines()]
    assert lines == [["local", "all", "all", "trust"],
                     ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"],
                     ["host", "all", "all", "samenet", "scram-sha-256"]]
    assert os.access(hba, os.R_OK)
