"""
### Serving drift monitoring

Each hour (`RICE_MONITORING_SCHEDULE`), the prediction logs of the model version that serves,
since the last judged window, against the reference its gate recorded on its test split: the
class mix (chi-square), confidence and every input statistic (Kolmogorov-Smirnov), Holm over
all. The verdict is the run note and an MLflow run of `rice-monitoring` with its plot; a drift
verdict is a `rice_drift` asset event with the evidence, and an e-mail.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from rice_mlops.core.settings import PipelineSettings
from rice_mlops.core.vocabulary import MONITORING_DAG_ID
from rice_mlops.stages import monitoring
from rice_mlops.stages.assets import RICE_DRIFT

SETTINGS = PipelineSettings.from_env()
_RELEASE = SETTINGS.queue("docker")  # the only zone that mounts the serving directory


@dag(
    dag_id=MONITORING_DAG_ID, schedule=SETTINGS.monitoring_schedule,
    start_date=datetime(2026, 1, 1), catchup=False, max_active_runs=1, doc_md=__doc__,
    tags=["mlops", "rice", "serving", "monitoring"],
    default_args={"owner": "ml-platform", "retries": 2,
                  "retry_delay": timedelta(seconds=SETTINGS.retry_delay_seconds),
                  "execution_timeout": timedelta(minutes=SETTINGS.task_timeout_minutes)},
)
def rice_monitoring():
    @task(**_RELEASE)
    def check_drift(run_id=None) -> dict:
        """Judge the window of the serving version's logs against its reference."""
        return monitoring.check_drift(SETTINGS, run_id)

    @task(inlets=[RICE_DRIFT], outlets=[RICE_DRIFT], **_RELEASE)  # only its events count
    def raise_drift(run_id=None, inlet_events=None, outlet_events=None) -> dict:
        """On a drift verdict, the `rice_drift` event with the evidence and an e-mail, unless
        in cooldown (the verdict is check_drift's own file, not its XCom)."""
        return monitoring.raise_drift(SETTINGS, run_id, outlet_events[RICE_DRIFT],
                                      inlet_events[RICE_DRIFT])

    check_drift() >> raise_drift()


rice_monitoring()
