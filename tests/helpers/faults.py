"""Fault injection on the compose stack, and the checks that nothing was lost or duplicated.

A fault is injected at a chosen task: the driver watches the run's task states through the
REST API (tolerating the API server's own outages) and breaks a service the moment a task
reaches a state. Services are broken the way production breaks them: a container's init
process SIGKILLed from the host (the OOM killer, a node drain; Docker's restart policy brings
it back, as it would), `docker-compose restart` (a deploy, a crash loop), `stop`/`start` (a
registry taken away and given back). Findings go to `test-artifacts/chaos.json`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.helpers.airflow_stack import DAG_ID, xcom_value
from tests.helpers.compose_stack import ComposeStack
from tests.helpers.paths import REPO

MODEL_NAME = "rice-classifier"
RUN_TAG = "rice.airflow_dag_run_id"
IMAGE_TAG = "rice.image"
REPOSITORY = "local/rice-mlops"  # the stack's GITHUB_WEBHOOK_REPOSITORIES
REPORT = REPO / "test-artifacts" / "chaos.json"
TERMINAL = {"success", "failed", "skipped", "upstream_failed", "removed"}
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse_time(value: str | None) -> float | None:
    """An ISO timestamp from the REST API as epoch seconds."""
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp()  # 3.11 reads the trailing Z


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


def deliver(stack: ComposeStack, commit: str, delivery: str | None = None,
            client: httpx.Client | None = None) -> tuple[str, str, float, str]:
    """A signed push of `commit` to the stack's webhook, as GitHub sends it (with `delivery`
    as its X-GitHub-Delivery, for a redelivery): (commit, status or "no answer: ...", seconds,
    the run the answer names)."""
    from rice_mlops.webhook.send import push_payload, send

    start = time.perf_counter()
    try:
        answer = send(stack.webhook, stack.env["GITHUB_WEBHOOK_SECRET"],
                      push_payload("refs/heads/main", commit, REPOSITORY), delivery=delivery,
                      timeout=10, client=client)
        run_id = answer.json().get("dag_run_id", "") if answer.status_code < 300 else ""
        return commit, str(answer.status_code), time.perf_counter() - start, run_id
    except (httpx.HTTPError, ValueError) as exc:  # refused or reset while the server is down
        return commit, f"no answer: {type(exc).__name__}", time.perf_counter() - start, ""


# --- the services --------------------------------------------------------------------------

def containers(stack: ComposeStack, service: str | None = None) -> list[dict]:
    """`docker inspect` of the stack's containers (of one service), its remote worker's
    (another compose project) included."""
    projects = [stack.project_of(service)] if service else [stack, *filter(None, [stack.remote])]
    ids = [found for project in projects
           for found in project.compose("ps", "-q", *([service] if service else [])).stdout.split()]
    if not ids:
        return []
    return json.loads(subprocess.run(["docker", "inspect", *ids], check=True,
                                     capture_output=True, text=True).stdout)


def container_of_host(stack: ComposeStack, hostname: str) -> dict:
    """The container whose hostname (its short id) a task instance recorded."""
    for container in containers(stack):
        if hostname and (container["Id"].startswith(hostname)
                         or container["Config"]["Hostname"] == hostname):
            return container
    raise LookupError(f"no container of the stack has hostname {hostname!r}")


def service_of(container: dict) -> str:
    return container["Config"]["Labels"]["com.docker.compose.service"]


def sigkill(container: dict) -> int:
    """SIGKILL the container's init process from the host, as the OOM killer or a node drain
    would: every process in it dies, and Docker's restart policy (not a person) restarts it."""
    pid = container["State"]["Pid"]
    if not pid:
        raise RuntimeError(f"{container['Name']} is not running")
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_restarted(container: dict, timeout: float = 180) -> None:
    """Until Docker restarted the container after a kill (its restart count went up)."""
    deadline, before = time.monotonic() + timeout, container["RestartCount"]
    while time.monotonic() < deadline:
        now = json.loads(subprocess.run(["docker", "inspect", container["Id"]], check=True,
                                        capture_output=True, text=True).stdout)[0]
        if now["RestartCount"] > before and now["State"]["Running"]:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{container['Name']} not restarted within {timeout:.0f}s")


def wait_service_healthy(stack: ComposeStack, service: str, timeout: float = 300) -> None:
    """Until every container of `service` reports healthy (or runs, without a check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = containers(stack, service)
        if found and all(c["State"]["Running"] and c["State"].get("Health", {}).get(
                "Status", "healthy") == "healthy" for c in found):
            return
        time.sleep(1)
    raise TimeoutError(f"{service} not healthy within {timeout:.0f}s")


def wait_http(url: str, timeout: float = 300, auth=None) -> None:
    """Until `url` answers anything but a refused connection or a 5xx."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5, auth=auth).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def wait_airflow_health(stack: ComposeStack, component: str, since: float,
                        timeout: float = 300) -> None:
    """Until the API server's health answer says `component` is healthy (for the scheduler,
    DAG processor and triggerer: with a heartbeat later than `since`, epoch seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{stack.airflow}/api/v2/monitor/health", timeout=5).json()
            part = health.get(component) or {}
            beat = next((v for k, v in part.items() if k.startswith("latest_")), None)
            if part.get("status") == "healthy" and (component == "metadatabase"
                                                    or (parse_time(beat) or 0) > since):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Airflow's {component} not healthy within {timeout:.0f}s")


class Background:
    """Measure recoveries while the driver goes on to the next fault."""

    def __init__(self):
        self.threads: list[threading.Thread] = []

    def measure(self, record: dict, key: str, wait: Callable[[], object],
                since: float) -> None:
        """record[key] = seconds from `since` (time.monotonic()) until `wait` returns."""
        def run():
            try:
                wait()
                record[key] = round(time.monotonic() - since, 1)
            except Exception as exc:  # noqa: BLE001 - the test reports what went wrong
                record.setdefault("errors", []).append(f"{key}: {exc}")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


# --- what must hold after every fault ------------------------------------------------------

@dataclass
class Ledger:
    """What a DAG run left in MLflow, the registry and Airflow, and what is wrong with it."""

    counts: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class Mlflow:
    def __init__(self, url: str, auth: tuple[str, str]):
        self.url, self.auth = url.rstrip("/"), auth

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = httpx.request(method, f"{self.url}/api/2.0/mlflow/{path}", auth=self.auth,
                                 timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def runs_of(self, dag_run_id: str, view: str = "ALL") -> list[dict]:
        response = httpx.get(f"{self.url}/api/2.0/mlflow/experiments/get-by-name",
                             params={"experiment_name": MODEL_NAME}, auth=self.auth, timeout=30)
        if response.status_code == 404:  # no run has been logged yet
            return []
        response.raise_for_status()
        experiment = response.json()["experiment"]
        found = self.call("POST", "runs/search", json={
            "experiment_ids": [experiment["experiment_id"]], "max_results": 1000,
            "filter": f"tags.`{RUN_TAG}` = '{dag_run_id}'", "run_view_type": view})
        return found.get("runs", [])

    def epochs_logged(self, run_id: str, metric: str = "loss") -> int:
        history = self.call("GET", "metrics/get-history",
                            params={"run_id": run_id, "metric_key": metric})
        return len(history.get("metrics", []))

    def versions(self) -> list[dict]:
        found = self.call("GET", "model-versions/search",
                          params={"filter": f"name='{MODEL_NAME}'", "max_results": 1000})
        return found.get("model_versions", [])

    def champion(self) -> dict | None:
        response = httpx.get(f"{self.url}/api/2.0/mlflow/registered-models/alias",
                             params={"name": MODEL_NAME, "alias": "champion"},
                             auth=self.auth, timeout=30)
        return response.json()["model_version"] if response.status_code == 200 else None


def manifest_digest(stack: ComposeStack, reference: str) -> str | None:
    """The digest the stack's registry answers for a tag or digest of the serving image."""
    response = httpx.get(f"http://{stack.registry}/v2/{MODEL_NAME}/manifests/{reference}",
                         auth=(stack.env["REGISTRY_USER"], stack.env["REGISTRY_PASSWORD"]),
                         headers={"Accept": MANIFEST_V2}, timeout=30)
    return response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None


def ledger(stack: ComposeStack, api: Airflow, run_id: str, commit: str) -> Ledger:
    """Exactly one finished MLflow training run and one model version for the DAG run, the
    commit tag on the one digest the run recorded, at most one pull-request commit, the
    champion on a version whose image exists, no task of any run left unfinished."""
    mlflow = Mlflow(stack.mlflow, stack.mlflow_pipeline)
    found = Ledger()
    runs = mlflow.runs_of(run_id)
    active = [r for r in runs if r["info"]["lifecycle_stage"] == "active"]
    finished = [r for r in active if r["info"]["status"] == "FINISHED"]
    found.counts["mlflow_runs"] = {"finished": len(finished), "active": len(active),
                                   "deleted": len(runs) - len(active)}
    if len(finished) != 1 or len(active) != 1:
        found.problems.append(f"MLflow holds {len(finished)} finished and {len(active)} active "
                              f"runs for DAG run {run_id} (want 1 and 1)")
    ids = {r["info"]["run_id"] for r in runs}
    versions = [v for v in mlflow.versions() if v.get("run_id") in ids]
    found.counts["model_versions"] = len(versions)
    if len(versions) != 1:
        found.problems.append(f"{len(versions)} model versions for DAG run {run_id} "
                              f"({sorted(v['version'] for v in versions)}; want 1)")

    recorded = (api.xcom(run_id, "record_image") or {}).get("digest_ref") or ""
    tagged = manifest_digest(stack, commit)
    found.counts["commit_tag"] = {"registry": tagged, "recorded": recorded}
    if not tagged or not recorded.endswith(f"@{tagged}"):
        found.problems.append(f"commit tag {commit} names {tagged} in the registry, the run "
                              f"recorded {recorded or 'nothing'}")

    tasks = api.tasks(run_id)
    pull = tasks.get("open_pull_request", {}).get("state")
    pushed = api.xcom(run_id, "open_pull_request") if pull == "success" else None
    commits = 1 if isinstance(pushed, dict) and pushed.get("commit") else 0
    found.counts["pull_request"] = {"state": pull, "commits": commits}
    if pull not in ("success", "skipped"):
        found.problems.append(f"open_pull_request ended {pull}")

    champion = mlflow.champion()
    if champion is None:
        found.problems.append("no version holds the champion alias")
    else:
        image = {t["key"]: t["value"] for t in champion.get("tags", [])}.get(IMAGE_TAG, "")
        exists = bool(image) and manifest_digest(stack, image.rpartition("@")[2]) is not None
        found.counts["champion"] = {"version": champion["version"], "image": image,
                                    "image_exists": exists}
        if not exists:
            found.problems.append(f"champion v{champion['version']} names image {image!r}, "
                                  "which the registry does not hold")

    unfinished = api.get("/dags/~/dagRuns/~/taskInstances",
                         state=["running", "queued", "scheduled", "up_for_retry",
                                "restarting", "deferred"], limit=100)["task_instances"]
    found.counts["unfinished_tasks"] = len(unfinished)
    if unfinished:
        found.problems.append("tasks left unfinished: " + ", ".join(
            f"{t['dag_run_id']}.{t['task_id']}={t['state']}" for t in unfinished))
    return found


def unhealthy(stack: ComposeStack, timeout: float = 300) -> dict[str, str]:
    """Services not healthy (one-shots aside) after waiting up to `timeout`, the remote
    worker's included."""
    found = stack.wait_healthy(timeout=timeout)
    if stack.remote is not None:
        found.update(stack.remote.wait_healthy(timeout=timeout))
    return found


# --- the report -----------------------------------------------------------------------------

class ChaosReport:
    """`test-artifacts/chaos.json`: one entry per fault (when it was injected, the outcome,
    recovery times, duplicates found), rewritten after every test; the suite's duration."""

    def __init__(self, path: Path = REPORT):
        self.path = path
        self.started = time.monotonic()
        self.started_at = utc_now()
        self.entries: list[dict] = []
        self.extra: dict = {}

    @property
    def duration_s(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def add(self, entry: dict) -> None:
        self.entries.append(entry)
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({
            "started_at": self.started_at, "duration_s": self.duration_s,
            **self.extra, "faults": self.entries}, indent=2, sort_keys=False) + "\n")
