"""What must hold after every fault: what a DAG run left in MLflow, the registry and
Airflow, with nothing lost or duplicated."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from tests.helpers.compose_project import ComposeStack
from tests.helpers.retrying_airflow import Airflow

MODEL_NAME = "rice-classifier"
RUN_TAG = "rice.airflow_dag_run_id"
IMAGE_TAG = "rice.image"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


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
