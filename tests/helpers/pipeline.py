"""What the integration tests hand the pipeline: the Airflow processes' environment, a run's
conf, and the commit, token and address those carry."""

from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import contextmanager

from rice_mlops.core.handoffs import ALLOWED_DESERIALIZATION_CLASSES
from tests.helpers.ports import free_port

SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"
GITHUB_TOKEN = "ghp_" + "e2eT0kenNeverLogged" * 2
NOTIFY = "ml-oncall@example.com"


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
        # The release zone's own directory; one host here, so beside the staged runs (it is
        # removed with them).
        "RICE_RELEASE_DIR": str(staging / "release"),
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
        # What the deployments set (scripts/airflow-stack, docker-compose.yaml): the stages'
        # typed hand-offs come back from XCom as objects, no other class of ours does.
        "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES": ALLOWED_DESERIALIZATION_CLASSES,
        **extra,
    }


def dag_conf(data_dir, **overrides) -> dict:
    return {"epochs": 1, "image_size": 64, "batch_size": 32, "data_dir": str(data_dir),
            "min_test_accuracy": 0.01, "max_regression": 1.0, "source_commit": SHA,
            "source_ref": "refs/heads/main", "source_repository": "acme/rice", **overrides}


SERVING_NAME = f"rice-test-{os.getpid()}"  # this session's serving containers


def rollout_env(docker_engine: dict, name: str) -> dict[str, str]:
    """Every shipped run of the stack is served: the rollout rides the runs that exist."""
    return {"RICE_ROLLOUT": "true", "RICE_ROLLOUT_NAME": name,
            "RICE_ROLLOUT_PROXY_IMAGE": docker_engine["RICE_ROLLOUT_PROXY_IMAGE"],
            "RICE_ROLLOUT_PORT": str(free_port()),
            "RICE_ROLLOUT_SLOT_PORTS": f"{free_port()},{free_port()}",
            # Short windows; one-epoch challengers disagree with a 12-epoch champion, so the
            # agreement floor is the unit tests' (test_rollout.py), the budgets a loaded CI's.
            "RICE_ROLLOUT_WINDOW_SECONDS": "2", "RICE_ROLLOUT_MIN_REQUESTS": "20",
            "RICE_ROLLOUT_MIN_AGREEMENT": "0", "RICE_ROLLOUT_MAX_P99_MS": "5000",
            # The monitoring runs when a test triggers it, on windows a test can fill; its
            # drift starts no training here (that run would queue before the tests' own).
            "RICE_MONITORING_SCHEDULE": "none", "RICE_MONITORING_MIN_PREDICTIONS": "60",
            "RICE_RETRAIN_ON_DRIFT": "false",
            # The servers keep a sample for labelling; the drift note counts it.
            "RICE_LABELLING_SAMPLE_RATE": "0.5"}


def remove_serving_containers(name: str) -> None:
    """Remove every serving container (proxy and slots) of the layout named `name`."""
    listed = subprocess.run(["docker", "ps", "-aq", "--filter",
                             f"label=io.rice-mlops.serving={name}"],
                            capture_output=True, text=True, check=False)
    if listed.stdout.split():
        subprocess.run(["docker", "rm", "-f", *listed.stdout.split()], capture_output=True,
                       check=False)


@contextmanager
def removed_after(name: str):
    """The serving containers of `name` are removed when the block ends, whatever happened."""
    try:
        yield
    finally:
        remove_serving_containers(name)
