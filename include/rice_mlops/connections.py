"""Optional Airflow connections: a stage whose connection is absent is skipped, not failed."""

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
