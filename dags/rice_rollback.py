"""
### Serving rollback on demand

Puts an earlier served image back at 100 % at once, with no canary: the one serving
`model_version`, or, left empty, the one before what serves now. Only digests this deployment
served before can be chosen (`RICE_RELEASE_DIR/serving/state.json`), and the chosen one must
still verify against the deployment's key. The run records who asked; `champion` is not moved
(set `RICE_ROLLBACK_TO_VERSION` and promote when the model registry should follow).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from rice_mlops.core import handoffs as h
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.core.vocabulary import ROLLBACK_DAG_ID
from rice_mlops.stages import serving
from rice_mlops.stages.assets import RICE_SERVING

SETTINGS = PipelineSettings.from_env()


@dag(
    dag_id=ROLLBACK_DAG_ID, schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
    max_active_runs=1, doc_md=__doc__, tags=["mlops", "rice", "serving"],
    # A retry is safe: a digest that already serves is left as it is.
    default_args={"owner": "ml-platform", "retries": 2,
                  "retry_delay": timedelta(seconds=SETTINGS.retry_delay_seconds),
                  "execution_timeout": timedelta(minutes=SETTINGS.task_timeout_minutes)},
    params={"model_version": Param(None, type=["null", "string"],
                                   pattern=r"^[1-9][0-9]{0,17}$",
                                   description="the version to serve again; empty: the one "
                                               "before the current")},
)
def rice_rollback():
    # The release zone (the socket and the signing key); what serves is a `rice_serving` event.
    @task(outlets=[RICE_SERVING], **SETTINGS.queue("docker"))
    def roll_back(params=None, dag_run=None, outlet_events=None) -> h.Served:
        """Serve an earlier verified digest at 100 % now; the run says who asked."""
        who = getattr(dag_run, "triggering_user_name", None) or "the scheduler"
        return serving.roll_back(SETTINGS, params, who, outlet_events[RICE_SERVING])

    roll_back()


rice_rollback()
