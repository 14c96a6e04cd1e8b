"""
### Webhook redelivery: no push lost

GitHub never retries a failed webhook delivery by itself. Every 15 minutes
(`RICE_REDELIVERY_SCHEDULE`) this DAG lists the repository webhook's recent deliveries through
the GitHub API (the `github_default` connection) and asks GitHub to redeliver every push whose
latest attempt failed (5xx, or no answer at all). The receiver deduplicates by pushed content
(repository and commit), so a redelivery never starts a second run for one commit.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

from rice_mlops.core.settings import PipelineSettings
from rice_mlops.stages import publication

SETTINGS = PipelineSettings.from_env()


@dag(
    dag_id="rice_webhook_redelivery",
    schedule=SETTINGS.redelivery_schedule,
    start_date=datetime(2026, 1, 1), catchup=False, max_active_runs=1,
    doc_md=__doc__,
    tags=["mlops", "rice", "webhook"],
    default_args={"owner": "ml-platform", "retries": 2,
                  "retry_delay": timedelta(seconds=SETTINGS.retry_delay_seconds),
                  "execution_timeout": timedelta(minutes=SETTINGS.task_timeout_minutes)},
)
def rice_webhook_redelivery():
    @task
    def redeliver_failed_pushes() -> list[int]:
        """Ask GitHub to redeliver every push delivery whose latest attempt failed."""
        return publication.redeliver_failed_pushes(SETTINGS)

    redeliver_failed_pushes()


rice_webhook_redelivery()
