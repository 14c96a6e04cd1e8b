"""Mounts the GitHub webhook receiver on the Airflow API server at /webhooks/github.

The receiver only verifies, filters and triggers; its code lives in rice_mlops.webhook.
Configuration: the API server's environment, read once by
rice_mlops.webhook.settings.WebhookSettings (GITHUB_WEBHOOK_*, AIRFLOW_WEBHOOK_*,
RICE_WEBHOOK_DAG_ID; the README's webhook settings table lists them all).

Every Airflow process loads this module (task processes too), but only the API server reads
`fastapi_apps`: the app is built on that first read, so a task neither imports FastAPI nor
logs the receiver's warnings about settings only the API server holds. A bad setting stops
the API server as it mounts the plugins, with the variable named.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class _WebhookApps:
    """`fastapi_apps`, built when first read and then kept on the class."""

    def __get__(self, instance, owner) -> list[dict]:
        from rice_mlops.webhook.app import create_app

        apps = [{"app": create_app(), "url_prefix": "/webhooks",
                 "name": "GitHub webhook (rice-mlops)"}]
        owner.fastapi_apps = apps
        return apps


class GitHubWebhookPlugin(AirflowPlugin):
    name = "rice_mlops_github_webhook"
    fastapi_apps = _WebhookApps()
