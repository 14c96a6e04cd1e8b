"""Services for the integration tests: PostgreSQL and the Airflow processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers.airflow_stack import AirflowStack
from tests.helpers.mailbox import Mailbox
from tests.helpers.paths import REPO
from tests.helpers.pipeline import (
    GITHUB_TOKEN,
    NOTIFY,
    SERVING_NAME,
    airflow_env,
    dag_conf,
    removed_after,
    rollout_env,
)
from tests.helpers.ports import free_port


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


@pytest.fixture(scope="session")
def staging_root():
    """Outside pytest's 0700 temp dirs: the serving image's non-root user reads it."""
    root = Path(tempfile.mkdtemp(prefix="rice-staging-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def github_double():
    """GitHub's REST API as a strict test double over a real bare git repository."""
    from tests.helpers.github_double import GitHubDouble

    double = GitHubDouble(GITHUB_TOKEN, repository="acme/rice")
    yield double
    double.close()


@pytest.fixture(scope="session")
def mailbox():
    box = Mailbox()
    yield box
    box.controller.stop()


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> dict[str, Path]:
    """The pipeline's key pair, as `make demo` makes one (private 0600)."""
    from rice_mlops.release.signing import generate_keypair

    private, public = generate_keypair(tmp_path_factory.mktemp("signing"))
    return {"private": private, "public": public}


@pytest.fixture(scope="session")
def airflow_pg(postgres_url, mlflow_server, docker_engine, staging_root, tmp_path_factory,
               github_double, mailbox, signing_keys):
    """Real api-server, scheduler, dag-processor and triggerer on PostgreSQL, with the Docker
    engine and the registry connection (created through the REST API, as an operator would)."""
    stack = AirflowStack(
        home=tmp_path_factory.mktemp("airflow-pg"), port=free_port(),
        env=airflow_env(mlflow_server, staging_root,
                        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgres_url,
                        RICE_BASE_IMAGE=docker_engine["RICE_BASE_IMAGE"],
                        RICE_BUILD_IMAGE=docker_engine["RICE_BUILD_IMAGE"],
                        RICE_DOCKER_CLI_IMAGE=docker_engine["RICE_DOCKER_CLI_IMAGE"],
                        RICE_NOTIFY_EMAILS=NOTIFY,
                        RICE_SIGNING_KEY_FILE=str(signing_keys["private"]),
                        **rollout_env(docker_engine, SERVING_NAME)),
    )
    with stack.running(), removed_after(SERVING_NAME):
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
        response = stack.api("POST", "/connections", json={
            "connection_id": "smtp_default", "conn_type": "smtp", "host": "127.0.0.1",
            "port": mailbox.port, "extra": json.dumps({"disable_tls": True,
                                                       "disable_ssl": True})})
        assert response.status_code == 201, response.text
        stack.add_pipeline_connection()
        yield stack


@pytest.fixture(scope="session")
def shipped_run(airflow_pg, small_real_dataset):
    """One full run through the REST API: trained, gated, built, smoke-tested, pushed."""
    conf = dag_conf(small_real_dataset, epochs=12)
    response = airflow_pg.trigger(conf, "e2e-shipped")
    assert response.status_code == 200, response.text
    assert response.json()["run_type"] == "manual"
    return conf, airflow_pg.wait_for_run("e2e-shipped", timeout=900)


@pytest.fixture(scope="session")
def docker_login(docker_engine, tmp_path_factory):
    """A docker CLI logged in to the test registry with its own throw-away config."""
    config = tmp_path_factory.mktemp("docker-config")
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    subprocess.run(["docker", "login", "--username", docker_engine["RICE_REGISTRY_USER"],
                    "--password-stdin", docker_engine["RICE_REGISTRY"]],
                   input=docker_engine["RICE_REGISTRY_PASSWORD"], text=True, env=env,
                   check=True, capture_output=True)
    return env


@pytest.fixture(scope="session")
def pushed(airflow_pg, shipped_run):
    """What the e2e-shipped run pushed: the one serving image a test session builds."""
    _, run = shipped_run
    assert run["state"] == "success", airflow_pg.task_states("e2e-shipped")
    image = airflow_pg.xcom("e2e-shipped", "record_image")
    assert image is not None, airflow_pg.task_states("e2e-shipped")
    return image


@pytest.fixture(scope="session")
def serving_image(request) -> str:
    """The serving image the pipeline built, pulled by digest; RICE_TEST_SERVING_IMAGE names a
    ready local image instead (only for iterating on the server: CI leaves it unset)."""
    ready = os.environ.get("RICE_TEST_SERVING_IMAGE")
    if ready:
        return ready
    ref = request.getfixturevalue("pushed")["digest_ref"]
    subprocess.run(["docker", "pull", ref], env=request.getfixturevalue("docker_login"),
                   check=True, capture_output=True, timeout=300)
    return ref
