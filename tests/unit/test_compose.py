"""docker-compose.yaml: every service, volume, file and variable it references exists, secrets
come only from .env, ports stay on loopback, long-running services have health checks, and the
trust zones hold (README, "Trust zones in the stack"): no worker holds or reaches the metadata
database, dags/ and plugins/ are read-only, every image is pinned by digest."""

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
           "RELEASE_REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
           "AIRFLOW_ADMIN_PASSWORD",
           "AIRFLOW_WEBHOOK_PASSWORD", "GITHUB_WEBHOOK_SECRET", "REGISTRY_PASSWORD",
           "MLFLOW_ADMIN_PASSWORD", "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_FLASK_SECRET_KEY",
           "AIRFLOW_PIPELINE_PASSWORD", "AIRFLOW_RELEASE_PASSWORD"}
WORKERS = {"airflow-worker", "airflow-worker-docker", "airflow-worker-training"}
COMPUTE_WORKERS = WORKERS - {"airflow-worker-docker"}
CONTROL_PLANE = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer"}
SERVICES = COMPOSE["services"]


def test_the_stack_has_every_component():
    assert {"postgres", "redis", "redis-release", "airflow-init", "airflow-apiserver",
            "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
            "airflow-worker-docker", "mlflow", "mlflow-users", "registry"} <= set(SERVICES)
    assert SERVICES["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == \
        "CeleryExecutor,release:rice_mlops.release_executor.ReleaseCeleryExecutor"
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


def test_only_the_docker_worker_reaches_the_engine_and_shares_the_staging_path():
    socket = "/var/run/docker.sock:/var/run/docker.sock"
    assert {name for name, service in SERVICES.items()
            if socket in service.get("volumes", [])} == {"airflow-worker-docker"}
    assert {name for name, service in SERVICES.items() if service.get("group_add")} == \
        {"airflow-worker-docker"}
    docker = SERVICES["airflow-worker-docker"]
    script = docker["command"][0]
    assert docker["entrypoint"] == ["/bin/bash", "-c"]
    assert script.splitlines()[-1] == \
        'exec airflow celery worker --queues "${RICE_DOCKER_QUEUE:-docker}" --concurrency 2'
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


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dags_and_plugins_are_read_only(name):
    """No task can rewrite the DAG or the plugin the next parse or API server start loads."""
    for mount in SERVICES[name].get("volumes", []):
        source, _, rest = mount.partition(":")
        if source.rstrip("/") in ("./dags", "./plugins"):
            assert rest.split(":")[1:] == ["ro"], (name, mount)


def test_every_airflow_service_mounts_dags_and_plugins():
    for name in CONTROL_PLANE - {"airflow-init"} | WORKERS:
        mounts = SERVICES[name]["volumes"]
        assert "./dags:/opt/airflow/dags:ro" in mounts and \
            "./plugins:/opt/airflow/plugins:ro" in mounts, name


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_no_worker_holds_the_metadata_database(name):
    """Compute and release zones: no metadata-database URL, no database result backend, no
    Fernet key; Airflow 3 workers run tasks through the API server's execution API."""
    env = SERVICES[name]["environment"]
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env, name
    assert "AIRFLOW__CORE__FERNET_KEY" not in env, name
    backend = env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert backend.startswith(("redis://:${REDIS_PASSWORD", "redis://:${RELEASE_REDIS_PASSWORD")
                              ), (name, backend)
    assert not any(str(value).startswith(("db+", "postgresql")) or "@postgres" in str(value)
                   for value in env.values()), name
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == \
        "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith(("redis://:${REDIS_PASSWORD",
                                                          "redis://:${RELEASE_REDIS_PASSWORD"))


def test_the_scheduler_and_the_compute_workers_share_the_redis_result_backend():
    backends = {SERVICES[name]["environment"]["AIRFLOW__CELERY__RESULT_BACKEND"]
                for name in COMPUTE_WORKERS | {"airflow-scheduler"}}
    assert backends == {"redis://:${REDIS_PASSWORD:?set in .env}@redis:6379/1"}


def test_the_release_worker_takes_commands_only_from_its_own_broker():
    """Issue 35: the release zone's tasks go through redis-release, on an internal network only
    the scheduler and the release worker join; the release worker's broker and result backend
    are that Redis (never the compute workers'), its messages pass the release channel's
    check, and the scheduler publishes to it through the release executor."""
    release = "redis://:${RELEASE_REDIS_PASSWORD:?set in .env}@redis-release:6379/"
    worker = SERVICES["airflow-worker-docker"]["environment"]
    assert worker["AIRFLOW__CELERY__BROKER_URL"] == release + "0"
    assert worker["AIRFLOW__CELERY__RESULT_BACKEND"] == release + "1"
    assert worker["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == \
        "rice_mlops.release_channel.WORKER_CELERY_CONFIG"
    scheduler = SERVICES["airflow-scheduler"]["environment"]
    assert scheduler["AIRFLOW__RELEASE_CELERY__BROKER_URL"] == release + "0"
    assert scheduler["AIRFLOW__RELEASE_CELERY__RESULT_BACKEND"] == release + "1"
    assert COMPOSE["networks"]["release-bus"].get("internal") is True
    assert _networks("redis-release") == {"release-bus"}
    assert {name for name in SERVICES if "release-bus" in _networks(name)} == \
        {"redis-release", "airflow-scheduler", "airflow-worker-docker"}
    assert "requirepass" in SERVICES["redis-release"]["command"][0]
    # Every service that parses the DAGs knows the executor the release tasks name.
    for name in CONTROL_PLANE | WORKERS:
        env = SERVICES[name]["environment"]
        assert env["RICE_RELEASE_EXECUTOR"] == "release", name
        assert "release:rice_mlops.release_executor.ReleaseCeleryExecutor" in \
            env["AIRFLOW__CORE__EXECUTOR"].split(","), name


def _networks(name: str) -> set[str]:
    return set(SERVICES[name].get("networks") or ["default"])


def test_only_the_control_plane_and_mlflow_share_a_network_with_postgres():
    """A worker cannot even resolve `postgres`: the database's network is not one of its own."""
    assert _networks("postgres") == {"metadata"}
    assert COMPOSE["networks"]["metadata"].get("internal") is True
    assert {name for name in SERVICES if "metadata" in _networks(name)} == \
        CONTROL_PLANE | {"postgres", "mlflow"}
    for name in WORKERS:
        assert _networks(name) - {"serving", "serving-door", "release-bus"} == {"default"}, \
            name
        assert "postgres" not in SERVICES[name].get("depends_on", {}), name


def test_only_the_release_worker_is_on_the_serving_network_at_fixed_addresses():
    """The serving containers are the release worker's: it alone reaches them (and the proxy
    alone is published, by the worker, on 127.0.0.1). The addresses it gives them lie in the
    network's own subnet, outside Docker's default address pools."""
    import ipaddress

    assert {name for name in SERVICES if "serving" in _networks(name)} == \
        {"airflow-worker-docker"}
    network = COMPOSE["networks"]["serving"]
    subnet = re.fullmatch(r"\$\{RICE_SERVING_SUBNET:-([0-9./]+)\}",
                          network["ipam"]["config"][0]["subnet"])
    env = SERVICES["airflow-worker-docker"]["environment"]
    addresses = re.fullmatch(r"\$\{RICE_SERVING_ADDRESSES:-([0-9.,]+)\}",
                             env["RICE_ROLLOUT_ADDRESSES"])
    assert subnet and addresses, (network, env["RICE_ROLLOUT_ADDRESSES"])
    subnet = ipaddress.IPv4Network(subnet.group(1))
    assert not subnet.overlaps(ipaddress.IPv4Network("172.16.0.0/12"))  # Docker's pools
    assert not subnet.overlaps(ipaddress.IPv4Network("192.168.0.0/16"))
    listed = [ipaddress.IPv4Address(a) for a in addresses.group(1).split(",")]
    assert len(set(listed)) == 3 and all(a in subnet for a in listed)
    assert network["name"] == env["RICE_ROLLOUT_NETWORK"] == \
        "${RICE_SERVING_NETWORK:-rice-serving}"
    # Internal: no server has a way out; the proxy's port is published from the door network,
    # which only the release worker joins among the services (so that compose creates it).
    assert network["internal"] is True
    door = COMPOSE["networks"]["serving-door"]
    assert not door.get("internal")
    assert door["name"] == env["RICE_ROLLOUT_DOOR_NETWORK"] == \
        "${RICE_SERVING_DOOR_NETWORK:-rice-serving-door}"
    assert {name for name in SERVICES if "serving-door" in _networks(name)} == \
        {"airflow-worker-docker"}
    assert ENV_EXAMPLE["RICE_SERVING_DOOR_NETWORK"] == "rice-serving-door"
    for key, default in (("RICE_SERVING_SUBNET", str(subnet)),
                         ("RICE_SERVING_ADDRESSES", addresses.group(1))):
        assert ENV_EXAMPLE[key] == default, key


def test_the_release_worker_restores_what_served_before_it_takes_a_task():
    """After `docker compose down` and `up`: the proxy and the stable container come back
    before the first task, and a restore that fails never keeps the worker from starting."""
    first, last = SERVICES["airflow-worker-docker"]["command"][0].strip().splitlines()
    assert first.startswith("rice-mlops serving restore || echo ")
    assert last.startswith("exec airflow celery worker")


def test_the_serving_proxy_image_is_pinned_too():
    env = SERVICES["airflow-worker-docker"]["environment"]
    assert re.fullmatch(r"\$\{RICE_ROLLOUT_PROXY_IMAGE:\?[^}]*\}",
                        env["RICE_ROLLOUT_PROXY_IMAGE"])
    assert ENV_EXAMPLE["RICE_ROLLOUT_PROXY_IMAGE"] == ""
    assert "RICE_ROLLOUT_PROXY_IMAGE=$(pinned" in (REPO / "scripts" / "compose-images").read_text()


def test_service_accounts_are_held_to_their_grants():
    """The webhook account may trigger the DAG and nothing else (rice_mlops.accounts); its role
    alone could not change anything."""
    from rice_mlops.accounts import parse_service_accounts

    env = SERVICES["airflow-apiserver"]["environment"]
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "rice_mlops.accounts.ServiceAccountAuthManager"
    assert parse_service_accounts(env["RICE_SERVICE_ACCOUNTS"]) == \
        {"webhook": "trigger", "pipeline": "annotate", "release": "verify"}
    roles = dict(user.split(":") for user in
                 env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(","))
    assert roles == {"admin": "admin", "webhook": "viewer", "pipeline": "viewer",
                     "release": "viewer"}


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
