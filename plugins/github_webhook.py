"""Mounts the GitHub webhook receiver on the Airflow API server at /webhooks/github, and the
pipeline's metrics from Airflow's own record at /rice/metrics (rice_mlops.stages.pipeline_metrics);
adds the middleware that holds service accounts' writes to their grants
(rice_mlops.operations.accounts.GrantedWritesOnly).

The receiver only verifies, filters and triggers; its code lives in rice_mlops.ingress.
Configuration: the API server's environment, read once by
rice_mlops.ingress.settings.WebhookSettings (GITHUB_WEBHOOK_*, AIRFLOW_WEBHOOK_*,
RICE_WEBHOOK_DAG_ID; docs/configuration.md's webhook settings table lists them all).

Every Airflow process loads this module (task processes too), but only the API server reads
`fastapi_apps`: the app is built on that first read, so a task neither imports FastAPI nor
logs the receiver's warnings about settings only the API server holds. A bad setting stops
the API server as it mounts the plugins, with the variable named.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


def read_variable(key: str) -> str | None:
    """An Airflow Variable (metadata DB, environment or secrets backend), None when unset: where
    GITHUB_WEBHOOK_SECRET_VARIABLE's secret is read from."""
    from airflow.models import Variable

    return Variable.get(key, default_var=None)


class _BuiltOnFirstRead:
    """A plugin attribute built by `build` when first read (only the API server reads these),
    then kept on the class in its place."""

    def __init__(self, build) -> None:
        self.build = build

    def __set_name__(self, owner, name) -> None:
        self.name = name

    def __get__(self, instance, owner) -> list[dict]:
        built = self.build()
        setattr(owner, self.name, built)
        return built


def _webhook_apps() -> list[dict]:
    from rice_mlops.ingress.app import create_app
    from rice_mlops.stages import pipeline_metrics

    return [{"app": create_app(variable_lookup=read_variable), "url_prefix": "/webhooks",
             "name": "GitHub webhook (rice-mlops)"},
            {"app": pipeline_metrics.create_app(), "url_prefix": "/rice",
             "name": "Pipeline metrics (rice-mlops)"}]


def _account_middlewares() -> list[dict]:
    """The service accounts' writes held to their grants."""
    from rice_mlops.operations.accounts import GrantedWritesOnly

    return [{"middleware": GrantedWritesOnly, "args": [], "kwargs": {},
             "name": "Service accounts' writes (rice-mlops)"}]


class GitHubWebhookPlugin(AirflowPlugin):
    name = "rice_mlops_github_webhook"
    fastapi_apps = _BuiltOnFirstRead(_webhook_apps)
    fastapi_root_middlewares = _BuiltOnFirstRead(_account_middlewares)
