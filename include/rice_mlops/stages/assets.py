"""The Airflow assets the DAGs share: the champion model and what serves. Their events are the
pipeline's own record (the next gate reads the champion's, an operator the serving history,
the training DAG the drift the monitoring saw)."""

from __future__ import annotations

from airflow.sdk import Asset

from rice_mlops.core.vocabulary import (
    DRIFT_ASSET,
    MODEL_ASSET,
    MODEL_NAME,
    MONITORING_DAG_ID,
    SERVING_ASSET,
)

RICE_MODEL = Asset(name=MODEL_ASSET, uri=f"mlflow://registered-models/{MODEL_NAME}")
RICE_SERVING = Asset(name=SERVING_ASSET, uri=f"mlflow://registered-models/{MODEL_NAME}/serving")
RICE_DRIFT = Asset(name=DRIFT_ASSET, uri=f"mlflow://registered-models/{MODEL_NAME}/drift")


# The one task whose `rice_drift` events count: it runs in the release zone (the release
# executor's broker, the serving directory), and Airflow records every event with the task
# instance whose token wrote it. Any task's token can list `rice_drift` among its outlets; an
# event from anywhere else is a claim nobody acts on (cooldown, note, training).
DRIFT_SOURCE = (MONITORING_DAG_ID, "raise_drift")


def raised_by_monitoring(events) -> list:
    """The `rice_drift` events among `events` that the release zone's monitoring raised."""
    return [event for event in events or ()
            if (getattr(event, "source_dag_id", None),
                getattr(event, "source_task_id", None)) == DRIFT_SOURCE]


def training_schedule(settings):
    """The training DAG's schedule: its cron (RICE_SCHEDULE) or a `rice_drift` event, either
    one starting a run (RICE_RETRAIN_ON_DRIFT); without a cron, drift alone."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    if not settings.retrain_on_drift:
        return settings.schedule
    if settings.schedule is None:
        return RICE_DRIFT
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(settings.schedule, timezone="UTC"),
                               assets=RICE_DRIFT)


def triggering_drift_events() -> list:
    """The `rice_drift` events that started the current run and that the monitoring raised."""
    from airflow.sdk import get_current_context

    try:
        events = get_current_context()["triggering_asset_events"][RICE_DRIFT]
    except (KeyError, RuntimeError, TypeError):
        return []
    return raised_by_monitoring(events)
