"""The session's one shared compose stack (tests/conftest.py): the environment laid over its
Airflow services, and the order that runs the tests using it last."""

from __future__ import annotations

from pathlib import Path

# Environment laid over every Airflow service of the shared compose stack (an override file:
# docker-compose.yaml keeps the deployment's defaults). A killed worker's task is found in a
# minute instead of five; retries come sooner; the chaos runs retrain against the champion
# the first run promoted, and the gate's statistics and the rollout's budgets are tested
# elsewhere.
COMPOSE_TEST_ENV = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    # Short, so the chaos run's retries (a killed `train`, a push to a stopped registry) come
    # soon; the registry is given back within a few seconds of the push's first failure.
    "RICE_RETRY_DELAY_SECONDS": "10",
    "RICE_MAX_REGRESSION": "1.0",
    "RICE_GATE_ALPHA": "0.0",
    "RICE_APPROVE_NOT_SIGNIFICANT": "false",
    # The chaos runs' challengers roll out against the first run's model on a loaded CI:
    # the rollout's own decisions are tested on the embedded stack (test_rollout_e2e.py).
    "RICE_ROLLOUT_MIN_AGREEMENT": "0",
    "RICE_ROLLOUT_MAX_P99_MS": "5000",
    # The monitoring runs when test_compose_stack_monitoring.py triggers it, on a window it
    # fills; its drift starts a training run (no cron here: drift alone schedules the DAG).
    "RICE_MONITORING_SCHEDULE": "none",
    "RICE_MONITORING_MIN_PREDICTIONS": "60",
}
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "airflow-worker-docker",
                    "airflow-worker-training")


def stack_order(item) -> int:
    """0: tests without the compose stack; 1: the integration tests on it, test_compose_stack.py
    and test_compose_stack_first_run.py first (a fresh stack's first run); 2: the chaos suite,
    which breaks and restores that same stack."""
    if "shared_compose_stack" not in getattr(item, "fixturenames", ()):
        return 0
    return 2 if Path(str(item.path)).parent.name == "chaos" else 1
