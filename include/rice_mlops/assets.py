"""The Airflow assets the DAGs share: the champion model and what serves. Their events are the
pipeline's own record (the next gate reads the champion's, an operator the serving history,
the training DAG the drift the monitoring saw)."""

from __future__ import annotations

from airflow.sdk import Asset

from rice_mlops.vocabulary import DRIFT_ASSET, MODEL_ASSET, MODEL_NAME, SERVING_ASSET

RICE_MODEL = Asset(name=MODEL_ASSET, uri=f"mlflow://registered-models/{MODEL_NAME}")
RICE_SERVING = Asset(name=SERVING_ASSET, uri=f"mlflow://registered-models/{MODEL_NAME}/serving")
RICE_DRIFT = Asset(name=DRIFT_ASSET, uri=f"mlflow://registered-models/{MODEL_NAME}/drift")


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
