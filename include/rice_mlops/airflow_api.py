"""The pipeline's own calls to Airflow's REST API: run notes and the newer-push check.

They go through the API with a service account of their own (an Airflow connection: host
`http://api-server:8080`, login, password), not through the metadata database, so tasks keep
to what Airflow 3 lets a task do and the account's role bounds what they can change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import httpx

log = logging.getLogger(__name__)


def newer_push(mine: Mapping, runs: Iterable[Mapping]) -> str | None:
    """The commit of a run queued after `mine` for the same repository and branch, if any.

    Pure: `mine` and `runs` are dagRun documents of the REST API.
    """
    conf = mine.get("conf") or {}
    if not conf.get("source_commit"):
        return None  # nightly and hand-made runs are never superseded
    newest = None
    for run in runs:
        other = run.get("conf") or {}
        if run.get("dag_run_id") == mine.get("dag_run_id"):
            continue
        if (other.get("source_repository"), other.get("source_ref")) != (
                conf.get("source_repository"), conf.get("source_ref")):
            continue
        if not other.get("source_commit") or other["source_commit"] == conf["source_commit"]:
            continue
        later = (run.get("run_after") or "") > (mine.get("run_after") or "")
        if later and (newest is None or run["run_after"] > newest["run_after"]):
            newest = run
    return newest["conf"]["source_commit"] if newest else None


class AirflowApi:
    """A small synchronous client; the token is fetched once per task."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 15.0):
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        response = self._http.post("/auth/token", json={"username": username,
                                                         "password": password})
        if response.status_code != 201:
            raise RuntimeError(f"Airflow API at {base_url} refused the pipeline's service "
                               f"account {username!r} ({response.status_code})")
        self._http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    @classmethod
    def from_connection(cls, conn_id: str) -> AirflowApi | None:
        from rice_mlops.connections import optional_connection

        conn = optional_connection(conn_id)
        if conn is None or not conn.host:
            return None
        host = conn.host if conn.host.startswith("http") else f"http://{conn.host}"
        base = f"{host}:{conn.port}" if conn.port else host
        return cls(base, conn.login or "", conn.password or "")

    def _json(self, method: str, path: str, **kwargs) -> dict:
        response = self._http.request(method, f"/api/v2{path}", **kwargs)
        response.raise_for_status()
        return response.json()

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._json("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def recent_runs(self, dag_id: str, limit: int = 100) -> list[dict]:
        return self._json("GET", f"/dags/{dag_id}/dagRuns",
                          params={"limit": limit, "order_by": "-run_after"})["dag_runs"]

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> dict | None:
        """The task's human-in-the-loop detail, or None when it asked nobody (404)."""
        response = self._http.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                                  f"{task_id}/-1/hitlDetails")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def set_note(self, dag_id: str, run_id: str, note: str) -> None:
        self._json("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"note": note[:1000]},
                   params={"update_mask": "note"})
