"""The trust zones docker-compose.yaml draws (README, "The zones"): no worker holds or
reaches the metadata database, dags/ and plugins/ are read-only, only the Docker worker
reaches the engine, the release directory and the serving networks, the release worker
takes commands only from its own broker, and service accounts are held to their grants."""

from __future__ import annotations

import re

import pytest

from tests.helpers.compose_file import (
    COMPOSE,
    COMPUTE_WORKERS,
    CONTROL_PLANE,
    ENV_EXAMPLE,
    SERVICES,
    WORKERS,
)


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
        "rice_mlops.stages.release_channel.WORKER_CELERY_CONFIG"
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
        assert "release:rice_mlops.stages.release_executor.ReleaseCeleryExecutor" in \
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
    """The serving containers are the release worker's: it alone commands them (and the proxy
    alone is published, by the worker, on 127.0.0.1); Prometheus joins only to scrape them, and
    offers nothing there to write (no admin API, no lifecycle endpoints, a login for every
    read). The addresses lie in the network's own subnet, outside Docker's default pools."""
    import ipaddress

    assert {name for name in SERVICES if "serving" in _networks(name)} == \
        {"airflow-worker-docker", "prometheus"}
    flags = SERVICES["prometheus"]["command"]
    assert not [flag for flag in flags if flag.startswith(("--web.enable-admin-api",
                                                            "--web.enable-lifecycle",
                                                            "--web.enable-remote-write"))]
    assert "--web.config.file=/etc/prometheus/config/web.yml" in flags
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


def test_service_accounts_are_held_to_their_grants():
    """The webhook account may trigger the DAG and nothing else (rice_mlops.operations.accounts);
    its role alone could not change anything."""
    from rice_mlops.operations.accounts import parse_service_accounts

    env = SERVICES["airflow-apiserver"]["environment"]
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == (
        "rice_mlops.operations.accounts.ServiceAccountAuthManager")
    assert parse_service_accounts(env["RICE_SERVICE_ACCOUNTS"]) == \
        {"webhook": "trigger", "pipeline": "annotate", "release": "verify"}
    roles = dict(user.split(":") for user in
                 env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(","))
    assert roles == {"admin": "admin", "webhook": "viewer", "pipeline": "viewer",
                     "release": "viewer"}
