"""The compose stack's REST API for a fault-injection driver: it watches a run's task states
and tolerates the API server's own outages (every call retries until its deadline)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import httpx

from tests.helpers.airflow_stack import DAG_ID, xcom_value

TERMINAL = {"success", "failed", "skipped", "upstream_failed", "removed"}


class Airflow:
    """The stack's REST API as the admin, for a driver that must survive the API server, its
    database and the scheduler going away: every call retries until its deadline."""

    def __init__(self, url: str, password: str):
        self.url = url.rstrip("/")
        self.password = password
        self.headers: dict[str, str] = {}

    def _login(self) -> None:
        token = httpx.post(f"{self.url}/auth/token", timeout=10,
                           json={"username": "admin", "password": self.password})
        token.raise_for_status()
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    def request(self, method: str, path: str, *, patience: float = 120,
                ok: Iterable[int] = (200,), **kwargs) -> httpx.Response:
        """The first answer with a status in `ok` (others, 5xx and refused connections are
        retried for `patience` seconds); the last answer or error after that."""
        ok = set(ok)
        deadline = time.monotonic() + patience
        while True:
            try:
                if not self.headers:
                    self._login()
                response = httpx.request(method, f"{self.url}/api/v2{path}",
                                         headers=self.headers, timeout=30, **kwargs)
                if response.status_code == 401:
                    self.headers = {}
                if response.status_code in ok or time.monotonic() > deadline:
                    return response
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(1)

    def get(self, path: str, **params) -> dict:
        response = self.request("GET", path, params=params)
        response.raise_for_status()
        return response.json()

    def unpause(self, dag_id: str = DAG_ID) -> None:
        for _ in range(150):  # the DAG processor may not have parsed it yet
            if self.request("GET", f"/dags/{dag_id}", ok=(200, 404)).status_code == 200:
                break
            time.sleep(2)
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, run_id: str, conf: dict, dag_id: str = DAG_ID) -> dict:
        response = self.request("POST", f"/dags/{dag_id}/dagRuns", ok=(200, 409),
                                json={"dag_run_id": run_id, "logical_date": None, "conf": conf})
        response.raise_for_status()
        return response.json()

    def run(self, run_id: str, dag_id: str = DAG_ID) -> dict:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")

    def task(self, run_id: str, task_id: str) -> dict:
        return self.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")

    def tasks(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, dict]:
        listed = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)
        return {ti["task_id"]: ti for ti in listed["task_instances"]}

    def xcom(self, run_id: str, task_id: str, key: str = "return_value",
             dag_id: str = DAG_ID):
        """The task's XCom under `key`, decoded by `xcom_value`; None when it pushed none, or
        when the API server gave no other answer within the request's patience."""
        response = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                                       f"{task_id}/xcomEntries/{key}", ok=(200, 404))
        return xcom_value(response.json()) if response.status_code == 200 else None

    def log(self, run_id: str, task_id: str, try_number: int) -> str:
        response = self.request("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/"
                                       f"{task_id}/logs/{try_number}", ok=(200, 404), patience=30)
        return response.text if response.status_code == 200 else ""

    def tries(self, run_id: str, task_id: str) -> list[dict]:
        """Every attempt of a task (state, hostname, start and end), oldest first."""
        listed = self.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        return sorted(listed["task_instances"], key=lambda t: t["try_number"])

    def wait_task(self, run_id: str, task_id: str, states: set[str], timeout: float,
                  poll: float = 0.5, stop: threading.Event | None = None) -> dict | None:
        """The task instance once its state is in `states`; None when the run ended first
        (or `stop` was set: a driver giving up on a background watcher)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            ti = self.task(run_id, task_id)
            if ti["state"] in states:
                return ti
            if self.run(run_id)["state"] in ("success", "failed"):
                return None
            time.sleep(poll)
        if stop and stop.is_set():
            return None
        raise TimeoutError(f"{task_id} of {run_id} not in {sorted(states)} after {timeout:.0f}s")

    def wait_run(self, run_id: str, timeout: float, dag_id: str = DAG_ID) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id, dag_id)
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(3)
        raise TimeoutError(f"run {run_id} not finished after {timeout:.0f}s")
