"""The scheduler's second Celery executor: the release zone's tasks through a broker of their own.

Queues separate load, not trust: on one broker, every worker that holds its password (compute
workers, a remote machine's) can publish on the release queue, listen on it and take its tasks
with their tokens, or broadcast `shutdown` to the release worker. So the release zone's tasks
go through a second broker that only the scheduler and the release worker can reach and log in
to. Airflow 3 runs several executors side by side, a task choosing one with `executor=`:

    AIRFLOW__CORE__EXECUTOR=CeleryExecutor,release:rice_mlops.stages.release_executor.ReleaseCeleryExecutor
    AIRFLOW__RELEASE_CELERY__BROKER_URL=redis://:...@redis-release:6379/0      (scheduler only)
    AIRFLOW__RELEASE_CELERY__RESULT_BACKEND=redis://:...@redis-release:6379/1  (scheduler only)
    RICE_RELEASE_EXECUTOR=release       (the DAGs put their release tasks on it)

Everything else is Airflow's CeleryExecutor as configured in `[celery]`; only the Celery app
(broker, result backend) differs. The release worker itself is a plain `airflow celery worker`
whose `[celery] broker_url` is this broker (and whose messages `rice_mlops.stages.release_channel`
checks). Airflow's multi-team mode gives each team its own executor configuration too, but a
team owns whole DAG bundles, and this DAG has tasks in both zones.

Imported by the scheduler (the executor loader) alone: never by a DAG file.
"""

from __future__ import annotations

from airflow.providers.celery.executors import celery_executor_utils as utils
from airflow.providers.celery.executors.celery_executor import CeleryExecutor
from airflow.providers.celery.executors.default_celery import get_default_celery_config
from airflow.providers.common.compat.sdk import conf
from celery import Celery

SECTION = "release_celery"  # AIRFLOW__RELEASE_CELERY__*: Airflow's own configuration


def release_celery_app() -> Celery:
    """Airflow's Celery configuration with the release broker and result backend in place of
    `[celery]`'s; a missing setting stops the scheduler with the variable to set."""
    config = get_default_celery_config(conf)
    for key in ("broker_url", "result_backend"):
        value = conf.get(SECTION, key, fallback="")
        if not value:
            raise ValueError(f"{SECTION}.{key} is not set (AIRFLOW__{SECTION.upper()}__"
                             f"{key.upper()}): the release executor has no broker of its own")
        config[key] = value
    # The provider's transport options are derived from [celery] broker_url's scheme; both are
    # Redis here, so they carry over.
    app = Celery(f"{conf.get('celery', 'CELERY_APP_NAME')}-release", config_source=config)
    app.task(name="execute_workload")(utils.execute_workload)
    return app


class ReleaseCeleryExecutor(CeleryExecutor):
    """CeleryExecutor publishing to, and reading results from, the release zone's broker."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.celery_app = release_celery_app()
        self.bulk_state_fetcher = utils.BulkStateFetcher(self._sync_parallelism,
                                                          celery_app=self.celery_app)

    def _send_workloads_to_celery(self, workload_tuples_to_send):
        # The provider's publisher finds its app by team name (one per team), which would be
        # [celery]'s broker; the release tasks are few and a run never overlaps another, so
        # they are published here, in order, with this executor's app.
        return [self._publish(item) for item in workload_tuples_to_send]

    def _publish(self, workload_tuple):
        import traceback

        from airflow.providers.common.compat.sdk import AirflowTaskTimeout, timeout

        key, workload, queue, _team = workload_tuple
        task_id = getattr(getattr(workload, "ti", None), "external_executor_id", None)
        args = (workload.model_dump_json(),)
        try:
            with timeout(seconds=utils.OPERATION_TIMEOUT):
                result = self.celery_app.tasks["execute_workload"].apply_async(
                    args=args, queue=queue, task_id=task_id)
        except (Exception, AirflowTaskTimeout) as exc:
            result = utils.ExceptionWithTraceback(
                exc, f"Celery Task ID: {key}\n{traceback.format_exc()}")
        return key, args, result
