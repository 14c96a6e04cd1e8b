"""Publishing the model artifacts to GitHub through providers-github."""

from __future__ import annotations


def github_connection_configured(conn_id: str) -> bool:
    """True when Airflow knows the connection (from the metadata DB, env or a secret backend)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True
