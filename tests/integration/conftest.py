"""Services for the integration tests: PostgreSQL and the Airflow processes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
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
def staging_root():
    """Outside pytest's 0700 temp dirs: the serving image's non-root user reads it."""
    root = Path(tempfile.mkdtemp(prefix="rice-staging-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def airflow_env(mlflow_url: str, staging, **extra: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": mlflow_url,
        # The pipeline's MLflow user (set by the mlflow_control fixture); the scripts hand
        # them to the task processes only.
        "MLFLOW_TRACKING_USERNAME": os.environ.get("MLFLOW_TRACKING_USERNAME", ""),
        "MLFLOW_TRACKING_PASSWORD": os.environ.get("MLFLOW_TRACKING_PASSWORD", ""),
        "RICE_SCHEDULE": "none",
        "RICE_REDELIVERY_SCHEDULE": "none",
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
        # The deployment's floors, low so tests can train for one epoch; conf may only raise
        # them. Datasets live in pytest's temporary directories.
        "RICE_MIN_TEST_ACCURACY": "0.01",
        "RICE_MAX_REGRESSION": "1.0",
        "RICE_MIN_CLASS_RECALL": "0.0",
        # One-epoch challengers against a 12-epoch champion are significantly worse; these
        # tests exercise the stages after the gate (tests/unit/test_stats_gate.py the gate).
        "RICE_GATE_ALPHA": "0.0",
        # Close calls are every call at alpha 0: only runs that ask for approval wait for it.
        "RICE_APPROVE_NOT_SIGNIFICANT": "false",
        "RICE_DATA_ROOT": tempfile.gettempdir(),
        "RICE_GITHUB_REPOSITORY": "acme/rice",
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


class Mailbox:
    """A real SMTP server on loopback (aiosmtpd) that keeps what it receives."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list = []
        mailbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                from email import message_from_bytes
                from email.policy import default

                mailbox.messages.append((list(envelope.rcpt_tos),
                                         message_from_bytes(envelope.content, policy=default)))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.port = self.controller.port

    def to(self, address: str) -> list:
        return [message for recipients, message in self.messages if address in recipients]


@pytest.fixture(scope="session")
def mailbox():
    box = Mailbox()
    yield box
    box.controller.stop()


NOTIFY = "ml-oncall@example.com"


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> dict[str, Path]:
    """The pipeline's key pair, as `make demo` makes one (private 0600)."""
    from rice_mlops.signing import generate_keypair

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
                        RICE_DOCKER_CLI_IMAGE=docker_engine["RICE_DOCKER_CLI_IMAGE"],
                        RICE_NOTIFY_EMAILS=NOTIFY,
                        RICE_SIGNING_KEY_FILE=str(signing_keys["private"])),
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
        response = stack.api("POST", "/connections", json={
            "connection_id": "smtp_default", "conn_type": "smtp", "host": "127.0.0.1",
            "port": mailbox.port, "extra": json.dumps({"disable_tls": True,
                                                       "disable_ssl": True})})
        assert response.status_code == 201, response.text
        stack.add_pipeline_connection()
        yield stack


SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def dag_conf(data_dir, **overrides) -> dict:
    return {"epochs": 1, "image_size": 64, "batch_size": 32, "data_dir": str(data_dir),
            "min_test_accuracy": 0.01, "max_regression": 1.0, "source_commit": SHA,
            "source_ref": "refs/heads/main", "source_repository": "acme/rice", **overrides}


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
    response = airflow_pg.api(
        "GET", "/dags/rice_classifier_cicd/dagRuns/e2e-shipped/taskInstances/record_image/"
               "xcomEntries/return_value")
    assert response.status_code == 200, response.text
    value = response.json()["value"]
    return json.loads(value) if isinstance(value, str) else value


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
