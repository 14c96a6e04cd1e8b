"""What the release worker agrees to run, whoever published it.

The release worker holds the Docker socket (root on the host), the signing key and the registry
password. A Celery broker is a command bus, not a wall: whoever can publish on a queue commands
the workers that read it, and Airflow's `execute_workload` runs an `ExecuteCallback` (any
function path, with the sender's arguments) or a `TestConnection` before any token is checked.
So the release zone has a broker of its own that only the scheduler reaches
(`rice_mlops.stages.release_executor`), and its worker checks every message before it acts on it:

- only an `ExecuteTask` (no callback, no connection test: nothing of ours needs either there);
- only for this project's DAGs that have release tasks, parsed from their own file in the DAGs
  folder bundle (the message names the file the task process will import);
- only for the queue this worker serves (RICE_DOCKER_QUEUE).

Anything else is refused before it runs, and the refusal is logged with what was asked (never
the token). The check sits on Celery's own task-call path through `task_annotations`, set by
the worker's `[celery] celery_config_options` (`WORKER_CELERY_CONFIG` below), so the provider's
`execute_workload` is unchanged and parses the message itself afterwards. The message is parsed
with Airflow's own workload model, not by hand.
"""

from __future__ import annotations

import logging
import os
from pathlib import PurePosixPath

from rice_mlops.core.vocabulary import DAG_ID, MONITORING_DAG_ID, ROLLBACK_DAG_ID

log = logging.getLogger(__name__)

# The DAGs with tasks on the release queue (dags/): nothing else may be run by this worker.
RELEASE_DAG_IDS = frozenset({DAG_ID, MONITORING_DAG_ID, ROLLBACK_DAG_ID})
BUNDLE = "dags-folder"  # Airflow's default bundle: the read-only dags/ mount


class RefusedWorkload(Exception):
    """A message on the release queue that this worker will not run."""


def refusal(message: str, queue: str, dag_ids: frozenset[str] = RELEASE_DAG_IDS) -> str | None:
    """Why the release worker must not run `message` (an `execute_workload` argument, JSON), or
    None when it is an `ExecuteTask` of one of `dag_ids` on `queue` from its own DAG file."""
    from airflow.executors.workloads import ExecuteTask, ExecutorWorkload
    from pydantic import TypeAdapter, ValidationError

    try:
        workload = TypeAdapter(ExecutorWorkload).validate_json(message)
    except (ValidationError, ValueError) as exc:
        return f"not an Airflow workload ({type(exc).__name__})"
    if not isinstance(workload, ExecuteTask):
        return f"a {type(workload).__name__} workload: this worker runs tasks only"
    ti = workload.ti
    where = f"{ti.dag_id}.{ti.task_id}"
    if ti.dag_id not in dag_ids:
        return f"task {where}: DAG {ti.dag_id!r} has no release tasks"
    if ti.queue != queue:
        return f"task {where}: queue {ti.queue!r}, this worker serves {queue!r}"
    path = PurePosixPath(str(workload.dag_rel_path))
    if path.is_absolute() or ".." in path.parts or path.name != f"{ti.dag_id}.py":
        return f"task {where}: DAG file {str(path)!r} is not {ti.dag_id}.py in the DAGs folder"
    if workload.bundle_info.name != BUNDLE:
        return f"task {where}: bundle {workload.bundle_info.name!r}, not {BUNDLE!r}"
    return None


def guarded_call(call):
    """Celery "around" advice for `execute_workload.__call__`: refuse, then call through."""

    def guarded(task, message, *args, **kwargs):
        queue = os.environ.get("RICE_DOCKER_QUEUE", "docker")
        reason = refusal(message if isinstance(message, str) else "", queue)
        if reason:
            request = getattr(task, "request", None)
            log.error("release worker refused Celery task %s: %s",
                      getattr(request, "id", "?"), reason)
            raise RefusedWorkload(reason)
        return call(task, message, *args, **kwargs)

    return guarded


def worker_celery_config() -> dict:
    """Airflow's Celery configuration for this worker (its broker from AIRFLOW__CELERY__*),
    with the check above on `execute_workload`."""
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    annotations = {"execute_workload": {"@__call__": guarded_call}}
    return {**DEFAULT_CELERY_CONFIG, "task_annotations": annotations}


def __getattr__(name: str):
    # `[celery] celery_config_options` names a dict; built on first use, not on import.
    if name == "WORKER_CELERY_CONFIG":
        return worker_celery_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
