"""Services for the integration tests: PostgreSQL and the Airflow processes."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import REPO, free_port
from tests.integration.airflow_stack import AirflowStack


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server started by the repository's script."""
    port = free_port()
    # The script's default home under /tmp: pytest's 0700 temp dirs are closed to `postgres`.
    env = {**os.environ, "PGPORT": str(port)}
    script = REPO / "scripts" / "postgres"
    subprocess.run([script, "start"], env=env, check=True, timeout=600)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/airflow"
    finally:
        subprocess.run([script, "destroy"], env=env, check=False, timeout=120)


def airflow_env(mlflow_url: str, staging, **extra: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": mlflow_url,
        "RICE_SCHEDULE": "none",
        "RICE_STAGING_DIR": str(staging),
        # Long enough for a test to restart a service between two attempts of a task.
        "RICE_RETRY_DELAY_SECONDS": "15",
        # Fail fast when MLflow is down, so a retry (not a 2-minute backoff) recovers.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        **extra,
    }


@pytest.fixture(scope="module")
def airflow_pg(postgres_url, mlflow_server, tmp_path_factory):
    """Real api-server, scheduler, dag-processor and triggerer on PostgreSQL."""
    stack = AirflowStack(
        home=tmp_path_factory.mktemp("airflow-pg"), port=free_port(),
        env=airflow_env(mlflow_server, tmp_path_factory.mktemp("staging"),
                        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgres_url),
    )
    stack.start()
    try:
        stack.wait_for_dag()
        stack.unpause()
        yield stack
    finally:
        stack.stop()
