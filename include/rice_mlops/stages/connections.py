"""Optional Airflow connections: a stage whose connection is absent is skipped, not failed.

The registry connection's two addresses are read here, so the tasks that push, attest and
promote need nothing of the Docker operators' module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rice_mlops.core.airflow_rest import AirflowRest
from rice_mlops.publication.pull_request import MAX_ATTEMPTS

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from github import Github


def optional_connection(conn_id: str) -> Connection | None:
    """The connection from the metadata DB, the environment or a secret backend; None if absent."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def registry_host(conn_id: str) -> str | None:
    """`host[:port]` of the registry connection, or None when it is not configured."""
    conn = optional_connection(conn_id)
    if conn is None:
        return None
    host = (conn.host or "").removeprefix("https://").removeprefix("http://").rstrip("/")
    return f"{host}:{conn.port}" if host and conn.port else (host or None)


def registry_api(conn_id: str) -> str | None:
    """Where this worker reaches the registry's HTTP API: the connection's extra `api_url`
    when the worker's network names it differently from the engine (compose: the engine pushes
    to 127.0.0.1:PORT, a worker container reaches http://registry:5000), else the host."""
    conn = optional_connection(conn_id)
    if conn is None:
        return None
    extra = conn.extra_dejson or {}
    return str(extra.get("api_url") or "").rstrip("/") or registry_host(conn_id)


def prometheus_windows(conn_id: str):
    """The canary windows from the Prometheus of connection `conn_id` (an http connection:
    host, port, login, password; extra `scrape_seconds`, its scrape interval), or None when
    it does not exist (then /metrics is read)."""
    from rice_mlops.release.rollout.windows import PrometheusMetrics

    conn = optional_connection(conn_id)
    if conn is None or not conn.host:
        return None
    scrape = (conn.extra_dejson or {}).get("scrape_seconds", 5)
    if not isinstance(scrape, int | float) or isinstance(scrape, bool) or not 0 < scrape <= 60:
        raise ValueError(f"connection {conn_id!r}: extra scrape_seconds must be a number of "
                         f"seconds from 1 to 60 (Prometheus's scrape interval), got {scrape!r}")
    auth = (conn.login, conn.password or "") if conn.login else None
    return PrometheusMetrics(url=http_base(conn), auth=auth, scrape_seconds=float(scrape))


def http_base(conn: Connection) -> str:
    """`scheme://host[:port]` of an http connection: the host's own scheme when it names one,
    else the connection's schema when it is `https`, else http."""
    host = conn.host.rstrip("/")
    if not host.startswith(("http://", "https://")):
        host = f"{'https' if conn.schema == 'https' else 'http'}://{host}"
    return f"{host}:{conn.port}" if conn.port else host


def airflow_rest(conn_id: str) -> AirflowRest | None:
    """From an Airflow connection (host `http://api-server`, port, login, password); None
    when there is no such connection or it names no host."""
    conn = optional_connection(conn_id)
    if conn is None or not conn.host:
        return None
    return AirflowRest(http_base(conn), conn.login or "", conn.password or "")


def unusable_connection_reason(conn_id: str) -> str | None:
    """Why the GitHub connection cannot open a pull request, or None when it can."""
    conn = optional_connection(conn_id)
    if conn is None:
        return (f"no Airflow connection {conn_id!r}: pull request not opened (add a GitHub "
                "connection with a token in its password to enable it)")
    if not conn.password:
        return (f"Airflow connection {conn_id!r} has no token in its password: pull request "
                "not opened (set GITHUB_TOKEN, or the connection's password, to enable it)")
    return None


def github_client(conn_id: str, *, timeout: float = 30,
                           attempts: int = MAX_ATTEMPTS) -> Github:
    """PyGithub's client for the connection, as GithubHook builds it, within the bounds of
    `rice_mlops.publication.pull_request`.

    Lazy: objects named by the pipeline (the repository, a commit) are not fetched first. No
    pause between requests: a run writes about a dozen objects once (one active run at a time),
    far below GitHub's 80 content-creating requests a minute, and a secondary limit's 403 with
    Retry-After is waited for."""
    from airflow.providers.github.hooks.github import GithubHook
    from github import Github

    from rice_mlops.publication.pull_request import GitHubAuthError, retry_policy

    # GithubHook(...) raises a bare ValueError when the token is missing: say which connection.
    conn = GithubHook.get_connection(conn_id)
    if not conn.password and not (conn.extra_dejson or {}).get("app_id"):
        raise GitHubAuthError(f"Airflow connection {conn_id!r} has no token in its password")
    try:
        hooked = GithubHook(github_conn_id=conn_id).get_conn()
    except ValueError as exc:
        raise GitHubAuthError(f"Airflow connection {conn_id!r}: {exc}") from None
    settings = hooked.requester.kwargs
    settings.update(timeout=timeout, retry=retry_policy(attempts), lazy=True,
                    user_agent="rice-mlops", seconds_between_requests=None,
                    seconds_between_writes=None)
    return Github(**settings)
