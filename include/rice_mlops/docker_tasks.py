"""Airflow glue for the image stages: the registry connection and the push operator.

Imported only by the DAG file and its tasks (it needs Airflow and the docker provider).
"""

from __future__ import annotations

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.connections import optional_connection


def registry_host(conn_id: str) -> str | None:
    """`host[:port]` of the registry connection, or None when it is not configured."""
    conn = optional_connection(conn_id)
    if conn is None:
        return None
    host = (conn.host or "").removeprefix("https://").removeprefix("http://").rstrip("/")
    return f"{host}:{conn.port}" if host and conn.port else (host or None)


class RegistryPushOperator(DockerOperator):
    """A DockerOperator whose registry credentials come from an Airflow connection and reach
    the container only through `private_environment` (never templated, logged or in XCom)."""

    def __init__(self, *, registry_conn_id: str, **kwargs):
        # A stopped container keeps its environment, the registry password included, for
        # anyone who can `docker inspect`: removed whatever the outcome.
        kwargs["auto_remove"] = "force"
        super().__init__(**kwargs)
        self.registry_conn_id = registry_conn_id

    def execute(self, context):
        conn = BaseHook.get_connection(self.registry_conn_id)
        # The provider keeps private variables in `_private_environment`, out of templates.
        self._private_environment = {"REGISTRY_USERNAME": conn.login or "",
                                    "REGISTRY_PASSWORD": conn.password or ""}
        try:
            return super().execute(context)
        except DockerContainerFailedException as exc:
            logs = "\n".join(line.decode() if isinstance(line, bytes) else str(line)
                             for line in exc.logs or [])
            if "rejected the credentials" in logs:
                # Retrying cannot fix wrong credentials: fail now, with the reason.
                raise AirflowFailException(
                    f"registry rejected the credentials of Airflow connection "
                    f"{self.registry_conn_id!r}: fix its login/password") from None
            raise
