"""Mounts the GitHub webhook receiver on the Airflow API server at /webhooks/github.

The receiver only verifies, filters and triggers; its code lives in rice_mlops.webhook.
Configuration (environment of the API server): GITHUB_WEBHOOK_SECRET (or
GITHUB_WEBHOOK_SECRET_VARIABLE, the name of an Airflow Variable holding it; during a rotation
GITHUB_WEBHOOK_SECRET_PREVIOUS is accepted too), GITHUB_WEBHOOK_BRANCH (main),
GITHUB_WEBHOOK_REPOSITORIES (comma-separated owner/name; empty allows any),
AIRFLOW_WEBHOOK_USERNAME / AIRFLOW_WEBHOOK_PASSWORD (service account), AIRFLOW_WEBHOOK_API_URL.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from rice_mlops.webhook.app import create_app


class GitHubWebhookPlugin(AirflowPlugin):
    name = "rice_mlops_github_webhook"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/webhooks",
                     "name": "GitHub webhook (rice-mlops)"}]
