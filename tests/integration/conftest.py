"""Services for the integration tests: PostgreSQL and the Airflow processes."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, copy_subset, free_port
from tests.integration.airflow_stack import AirflowStack


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server started by the repository's script."""
    port = free_port()
    env = {**os.environ, "PGPORT": str(port)}
    script = REPO / "scripts" / "postgres"
    subprocess.run([script, "start"], env=env, check=True, timeout=600)
    try:
        # The airflow role (no superuser) with its generated password: no trust over TCP.
        yield subprocess.run([script, "url"], env=env, check=True, capture_output=True,
                             text=True, timeout=60).stdout.strip()
    finally:
        subprocess.run([script, "destroy"], env=env, check=False, timeout=120)


def docker_engine_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """What `scripts/docker-engine env` prints (local images, registry, its credentials)."""
    out = subprocess.run([REPO / "scripts" / "docker-engine", "env"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return parse_env_lines(out)


def parse_env_lines(text: str) -> dict[str, str]:
    """`export KEY=value` lines quoted for the shell, read without a shell."""
    values = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) != 2 or words[0] != "export" or "=" not in words[1]:
            raise ValueError(f"not an `export KEY=value` line: {line!r}")
        key, value = words[1].split("=", 1)
        values[key] = value
    return values


@pytest.fixture(scope="session")
def docker_engine():
    """The engine, an htpasswd registry on loopback and the local base and CLI images, from
    the repository's script; what it started is stopped afterwards."""
    state = Path(tempfile.mkdtemp(prefix="rice-docker-"))
    env = {**os.environ, "RICE_DOCKER_STATE": str(state), "RICE_REGISTRY_PORT": str(free_port())}
    script = REPO / "scripts" / "docker-engine"
    subprocess.run([script, "start"], env=env, check=True, timeout=900)
    try:
        yield docker_engine_env(env)
    finally:
        subprocess.run([script, "stop"], env=env, check=False, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def staging_root():
    """Outside pytest's 0700 temp dirs: the serving image's non-root user reads it."""
    root = Path(tempfile.mkdtemp(prefix="rice-staging-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def small_real_dataset(real_data, tmp_path_factory):
    """100 / 20 / 20 real images per class: enough for a model that classifies well."""
    root = tmp_path_factory.mktemp("small-rice")
    root.chmod(0o755)
    return copy_subset(real_data, root, {"train": 100, "val": 20, "test": 20})


def airflow_env(mlflow_url: str, staging, **extra: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": mlflow_url,
        # The pipeline's MLflow user (set by the mlflow_control fixture); the scripts hand
        # them to the task processes only.
        "MLFLOW_TRACKING_USERNAME": os.environ.get("MLFLOW_TRACKING_USERNAME", ""),
        "MLFLOW_TRACKING_PASSWORD": os.environ.get("MLFLOW_TRACKING_PASSWORD", ""),
        "RICE_SCHEDULE": "none",
        "RICE_STAGING_DIR": str(staging),
        # Long enough for a test to restart a service between two attempts of a task.
        "RICE_RETRY_DELAY_SECONDS": "15",
        # Fail fast when MLflow is down, so a retry (not a 2-minute backoff) recovers.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        # Tests re-run tasks of earlier runs (a push from its own local build): housekeeping
        # must not depend on how many runs came before; test_housekeeping* cover pruning.
        "RICE_KEEP_BUILDS": "1000",
        **extra,
    }


GITHUB_TOKEN = "ghp_" + "e2eT0kenNeverLogged" * 2


@pytest.fixture(scope="session")
def github_double():
    """GitHub's REST API as a strict test double over a real bare git repository."""
    from tests.github_double import GitHubDouble

    double = GitHubDouble(GITHUB_TOKEN, repository="acme/rice")
    yield double
    double.close()


@pytest.fixture(scope="session")
def airflow_pg(postgres_url, mlflow_server, docker_engine, staging_root, tmp_path_factory,
               github_double):
    """Real api-server, scheduler, dag-processor and triggerer on PostgreSQL, with the Docker
    engine and the registry connection (created through the REST API, as an operator would)."""
    stack = AirflowStack(
        home=tmp_path_factory.mktemp("airflow-pg"), port=free_port(),
        env=airflow_env(mlflow_server, staging_root,
                        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgres_url,
                        RICE_BASE_IMAGE=docker_engine["RICE_BASE_IMAGE"],
                        RICE_DOCKER_CLI_IMAGE=docker_engine["RICE_DOCKER_CLI_IMAGE"]),
    )
    with stack.running():
        host, port = docker_engine["RICE_REGISTRY"].split(":")
        response = stack.api("POST", "/connections", json={
            "connection_id": "rice_registry", "conn_type": "generic", "host": host,
            "port": int(port), "login": docker_engine["RICE_REGISTRY_USER"],
            "password": docker_engine["RICE_REGISTRY_PASSWORD"]})
        assert response.status_code == 201, response.text
        response = stack.api("POST", "/connections", json={
            "connection_id": "github_default", "conn_type": "github",
            "host": github_double.url, "password": GITHUB_TOKEN})
        assert response.status_code == 201, response.text
        yield stack


SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def dag_conf(data_dir, **overrides) -> dict:
    return {"epochs": 1, "image_size": 64, "batch_size": 32, "data_dir": str(data_dir),
            "min_test_accuracy": 0.0, "max_regression": 1.0, "source_commit": SHA,
            "source_ref": "refs/heads/main", "source_repository": "acme/rice", **overrides}


@pytest.fixture(scope="session")
def shipped_run(airflow_pg, small_real_dataset):
    """One full run through the REST API: trained, gated, built, smoke-tested, pushed."""
    conf = dag_conf(small_real_dataset, epochs=12)
    response = airflow_pg.trigger(conf, "e2e-shipped")
    assert response.status_code == 200, response.text
    assert response.json()["run_type"] == "manual"
    return conf, airflow_pg.wait_for_run("e2e-shipped", timeout=900)
