"""Drive the repository's real Airflow processes (scripts/airflow-stack) and its REST API."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rice_mlops.core.handoffs import unwrapped
from tests.helpers.paths import REPO

DAG_ID = "rice_classifier_cicd"
FINISHED = {"success", "failed"}


def xcom_value(entry: dict) -> Any:
    """The value of an XCom entry as the REST API answers it (`GET .../xcomEntries/{key}`).

    The API answers the value as it was stored: an object, or a string that is a JSON
    document when the value was serialized first, or a task's plain string (a DockerOperator's
    last log line). A string is decoded when it is JSON and returned as it is otherwise (so a
    plain string that happens to be JSON text, such as "1", comes back decoded).

    A typed hand-off (`rice_mlops.core.handoffs`) is stored in Airflow's serde envelope
    `{"__classname__", "__version__", "__data__"}` (the API's `deserialize=true` would only
    stringify it): it comes back as the dict of its fields, tuples as lists, so tests read
    `xcom(run, "train")["run_id"]` whatever the task returned.
    """
    value = entry["value"]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return unwrapped(value)


def stored_xcom(value: Any) -> Any:
    """What a task's XCom stores for `value` (Airflow's serde), for a test that patches one
    through the REST API, which stores the body as it is."""
    from airflow.sdk.serde import serialize

    return serialize(value)


@dataclass
class AirflowStack:
    home: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    _token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _script(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, "AIRFLOW_HOME": str(self.home),
               "AIRFLOW_PORT": str(self.port)}
        return subprocess.run([REPO / "scripts" / "airflow-stack", command], env=env,
                              check=True, timeout=timeout, capture_output=True, text=True)

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop", timeout=120)

    @contextmanager
    def running(self, dag_id: str = DAG_ID) -> Iterator[AirflowStack]:
        """Started, with the DAG parsed and unpaused; stopped on exit."""
        self.start()
        try:
            self.wait_for_dag(dag_id)
            self.unpause(dag_id)
            yield self
        finally:
            self.stop()

    def status(self) -> str:
        env = {**os.environ, **self.env, "AIRFLOW_HOME": str(self.home),
               "AIRFLOW_PORT": str(self.port)}
        return subprocess.run([REPO / "scripts" / "airflow-stack", "status"], env=env,
                              capture_output=True, text=True, timeout=60).stdout

    @property
    def admin_password(self) -> str:
        return (self.home / "admin_password").read_text().strip()

    def token(self) -> str:
        if self._token is None:
            response = httpx.post(f"{self.url}/auth/token", timeout=10,
                                  json={"username": "admin", "password": self.admin_password})
            assert response.status_code == 201, response.text
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, headers: dict | None = None,
            **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **(headers or {})}
        return httpx.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=30,
                             **kwargs)

    def add_pipeline_connection(self) -> None:
        """The DAG's own service account (role user) as the `rice_airflow_api` connection,
        created through the REST API as an operator would, and as `rice_release_api`, the
        release zone's look at approvals (this stack is one zone: compose gives that one an
        account of its own)."""
        password = (self.home / "pipeline_password").read_text().strip()
        for connection_id in ("rice_airflow_api", "rice_release_api"):
            response = self.api("POST", "/connections", json={
                "connection_id": connection_id, "conn_type": "http", "host": "127.0.0.1",
                "port": self.port, "login": "pipeline", "password": password})
            assert response.status_code == 201, response.text

    def task_token(self, ti_id: str) -> str:
        """An execution API token for one task instance, as the scheduler signs it for the
        worker that runs the task (what whoever holds that worker holds)."""
        from airflow.api_fastapi.auth.tokens import JWTGenerator

        secret = (self.home / "jwt_secret").read_text().strip()
        return JWTGenerator(secret_key=secret, valid_for=300,
                            audience="urn:airflow.apache.org:task").generate({"sub": ti_id})

    def note(self, run_id: str, dag_id: str = DAG_ID) -> str | None:
        return self.run(run_id, dag_id).get("note")

    def wait_for_dag(self, dag_id: str = DAG_ID, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.api("GET", f"/dags/{dag_id}")
            if response.status_code == 200:
                return response.json()
            time.sleep(1)
        errors = self.api("GET", "/importErrors").json()
        raise AssertionError(f"DAG {dag_id} not parsed after {timeout}s; import errors: {errors}")

    def pause(self, dag_id: str = DAG_ID) -> None:
        self._set_paused(True, dag_id)

    def unpause(self, dag_id: str = DAG_ID) -> None:
        self._set_paused(False, dag_id)

    def _set_paused(self, paused: bool, dag_id: str) -> None:
        response = self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})
        assert response.status_code == 200, response.text

    def trigger(self, conf: dict, run_id: str, dag_id: str = DAG_ID) -> httpx.Response:
        return self.api("POST", f"/dags/{dag_id}/dagRuns",
                        json={"dag_run_id": run_id, "logical_date": None, "conf": conf})

    def run(self, run_id: str, dag_id: str = DAG_ID) -> dict:
        response = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_run(self, run_id: str, timeout: float = 600, dag_id: str = DAG_ID) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id, dag_id)
            if run["state"] in FINISHED:
                return run
            time.sleep(2)
        raise AssertionError(f"run {run_id} not finished after {timeout}s: "
                             f"{self.task_states(run_id, dag_id)}")

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> list[dict]:
        response = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        assert response.status_code == 200, response.text
        return response.json()["task_instances"]

    def task_instance(self, run_id: str, task_id: str, dag_id: str = DAG_ID) -> dict:
        return next(ti for ti in self.task_instances(run_id, dag_id) if ti["task_id"] == task_id)

    def xcom(self, run_id: str, task_id: str, key: str = "return_value",
             dag_id: str = DAG_ID) -> Any:
        """The task's XCom under `key`, decoded by `xcom_value`; None when it pushed none."""
        response = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/"
                                   f"xcomEntries/{key}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return xcom_value(response.json())

    def asset_events(self, run_id: str, asset: str, dag_id: str = DAG_ID) -> list[dict]:
        """The events of the asset named `asset` that the run emitted, oldest first."""
        response = self.api("GET", "/assets/events", params={
            "source_dag_id": dag_id, "source_run_id": run_id, "order_by": "timestamp"})
        assert response.status_code == 200, response.text
        return [event for event in response.json()["asset_events"] if event["name"] == asset]

    def clear_task(self, run_id: str, task_id: str, token: str | None = None,
                   timeout: float = 300, dag_id: str = DAG_ID,
                   include_downstream: bool = False) -> dict:
        """Clear one task instance through the REST API and wait for its next try to finish.

        Only that task is cleared (no upstream; its downstream too with `include_downstream`)
        and the run is set running again, as the UI's "Clear" does. `token` clears as another
        account (a bearer token, e.g. an ordinary user's); the admin's is used otherwise.
        Returns the task instance once a try after the one it had before the clear has
        finished, whatever its state; raises with the run's task states and failed logs after
        `timeout` seconds.
        """
        before = self.task_instance(run_id, task_id, dag_id)["try_number"]
        headers = {"Authorization": f"Bearer {token}"} if token else None
        response = self.api("POST", f"/dags/{dag_id}/clearTaskInstances", headers=headers, json={
            "dry_run": False, "task_ids": [task_id], "dag_run_id": run_id,
            "include_downstream": include_downstream, "include_upstream": False,
            "only_failed": False, "reset_dag_runs": True})
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ti = self.task_instance(run_id, task_id, dag_id)
            if ti["try_number"] > before and ti["state"] in FINISHED:
                return ti
            time.sleep(2)
        raise AssertionError(f"try {before + 1} of {task_id} in {run_id} not finished after "
                             f"{timeout}s: {self.describe(run_id, dag_id)}")

    def task_states(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, str]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(run_id, dag_id)}

    def task_log(self, run_id: str, task_id: str, try_number: int = 1,
                 dag_id: str = DAG_ID) -> str:
        """The task's log as text, one structured record per line (event first)."""
        response = self.api(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"})
        assert response.status_code == 200, response.text
        lines = []
        for record in response.json()["content"]:
            if isinstance(record, dict):
                rest = {k: v for k, v in record.items() if k != "event"}
                lines.append(f"{record.get('event', '')} {json.dumps(rest)}")
            else:
                lines.append(str(record))
        return "\n".join(lines)

    def describe(self, run_id: str, dag_id: str = DAG_ID, lines: int = 25) -> str:
        """Task states plus the log tail of every failed task: a useful assertion message."""
        parts = [str(self.task_states(run_id, dag_id))]
        for ti in self.task_instances(run_id, dag_id):
            if ti["state"] == "failed":
                log = self.task_log(run_id, ti["task_id"], max(1, ti["try_number"]), dag_id)
                tail = "\n".join(log.splitlines()[-lines:])
                parts.append(f"--- {ti['task_id']} (try {ti['try_number']}) ---\n{tail}")
        return "\n".join(parts)
