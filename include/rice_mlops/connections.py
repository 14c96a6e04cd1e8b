"""Optional Airflow connections: a stage whose connection is absent is skipped, not failed.

The registry connection's two addresses are read here, so the tasks that push, attest and
promote need nothing of the Docker operators' module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import Connection


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
