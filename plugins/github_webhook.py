"""Mounts the GitHub webhook receiver on the Airflow API server at /webhooks/github.

The receiver only verifies, filters and triggers; its code lives in rice_mlops.webhook.
Configuration: the API server's environment, read once by
rice_mlops.webhook.settings.WebhookSettings (GITHUB_WEBHOOK_*, AIRFLOW_WEBHOOK_*,
RICE_WEBHOOK_DAG_ID; the README's webhook settings table lists them all).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from rice_mlops.webhook.app import create_app


class GitHubWebhookPlugin(AirflowPlugin):
    name = "rice_mlops_github_webhook"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/webhooks",
                     "name": "GitHub webhook (rice-mlops)"}]
