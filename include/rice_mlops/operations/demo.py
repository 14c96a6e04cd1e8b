"""The main job's driver: trigger the pipeline with a signed webhook delivery, follow the run
with a live view of task states, and write a summary (`python -m rice_mlops.operations.demo`)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

import httpx

from rice_mlops.core import readers
from rice_mlops.core.airflow_rest import AirflowRejected, AirflowRest, AirflowUnavailable
from rice_mlops.core.handoffs import unwrapped  # a typed hand-off is read as its fields
from rice_mlops.core.vocabulary import DAG_ID
from rice_mlops.ingress.send import push_payload, send
from rice_mlops.operations.live_view import (
    DAG_RUN_TAG,
    LiveView,
    TrainingProgress,
    log_tail,
    progress_of,
    skip_reason,
)

FINISHED = ("success", "failed")
_SAFE_RUN_ID = re.compile(r"[A-Za-z0-9._:+-]{1,250}")  # no quote can end the filter's string


class Api(AirflowRest):
    """The demo's calls, with the stack's admin account."""

    def __init__(self, url: str, password: str):
        super().__init__(url, "admin", password, timeout=30)

    def xcom(self, run_id: str, task_id: str, key: str = "return_value"):
        entry = self.xcom_entry(DAG_ID, run_id, task_id, key)
        if entry is None:
            return None
        value = entry["value"]
        try:
            return unwrapped(json.loads(value) if isinstance(value, str) else value)
        except ValueError:
            return value


def wait_for_dag(api: Api, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            api.get(f"/dags/{DAG_ID}")
            return
        except AirflowRejected:
            time.sleep(1)
    raise SystemExit(f"demo: DAG {DAG_ID} not parsed after {timeout:.0f}s; see the "
                     "dag-processor log")


class TrainingWatch:
    """The MLflow run `train` logs to, found by its DAG run tag, read through MLflow's REST
    API with the demo's admin account: the progress is a view, so any error only hides it."""

    def __init__(self, mlflow_url: str, password: str | None, run_id: str,
                 experiment: str = "rice-classifier"):
        auth = ("admin", password) if password else None
        self.client = httpx.Client(base_url=mlflow_url.rstrip("/"), auth=auth, timeout=5)
        self.run_id, self.experiment = run_id, experiment
        self._experiment_id: str | None = None

    def progress(self) -> TrainingProgress | None:
        if not _SAFE_RUN_ID.fullmatch(self.run_id):  # it goes into MLflow's filter text
            return None
        try:
            if self._experiment_id is None:
                got = self.client.get("/api/2.0/mlflow/experiments/get-by-name",
                                      params={"experiment_name": self.experiment})
                self._experiment_id = got.raise_for_status().json()["experiment"]["experiment_id"]
            found = self.client.post("/api/2.0/mlflow/runs/search", json={
                "experiment_ids": [self._experiment_id], "max_results": 1,
                "filter": f"tags.`{DAG_RUN_TAG}` = '{self.run_id}'",
                "order_by": ["attributes.start_time DESC"]}).raise_for_status().json()
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
        runs = found.get("runs") or []
        return progress_of(runs[0]) if runs else None


def _task_log(api: Api, run_id: str, ti: dict) -> list:
    try:
        return api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/"
                       f"{max(1, ti.get('try_number') or 1)}", full_content="true")["content"]
    except (AirflowRejected, KeyError, TypeError):
        return []


def follow(api: Api, run_id: str, timeout: float, view: LiveView | None = None,
           watch: TrainingWatch | None = None, airflow_url: str = "") -> dict:
    """Show each task's state as it changes (with its duration once it ended), the training's
    progress while `train` runs, and a failed task's log tail, until the run finishes."""
    view = view or LiveView()
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")
        tasks = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        for ti in sorted(tasks, key=lambda t: t["start_date"] or "~"):
            state = ti["state"] or "none"
            if seen.get(ti["task_id"]) != state:
                seen[ti["task_id"]] = state
                ended = state in ("success", "failed") and ti.get("start_date")
                view.task(time.strftime("%H:%M:%S"), ti["task_id"], state,
                          ti.get("duration") if ended else None)
                if state == "failed":
                    view.failure(ti["task_id"], log_tail(_task_log(api, run_id, ti)),
                                 f"{airflow_url}/dags/{DAG_ID}/runs/{run_id}/tasks/"
                                 f"{ti['task_id']}")
            if ti["task_id"] == "train" and state == "running" and watch is not None:
                progress = watch.progress()
                if progress is not None:
                    view.training(progress, _elapsed(ti.get("start_date")))
        if run["state"] in FINISHED:
            return run
        time.sleep(2)
    raise SystemExit(f"demo: run {run_id} not finished after {timeout:.0f}s")


def _elapsed(start: str | None) -> float:
    from datetime import UTC, datetime

    try:
        return (datetime.now(UTC) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return 0.0


def skip_reasons(api: Api, run_id: str, tasks: dict[str, dict]) -> dict[str, str]:
    """Why each stage the summary names was skipped: the reason it logged when it skipped
    itself, or the stop before it (a skipped task that never ran)."""
    reasons = {}
    for task_id in ("push_image", "open_pull_request", "roll_out"):
        ti = tasks.get(task_id)
        if not ti or ti.get("state") != "skipped":
            continue
        if not ti.get("try_number"):
            reasons[task_id] = "the run stopped before it; see the outcome"
        elif reason := skip_reason(_task_log(api, run_id, ti)):
            reasons[task_id] = reason
    return reasons


def rollout_graph(api: Api, run_id: str) -> str | None:
    """roll_out's link to its graph in Prometheus, when the stack has one and it rolled out."""
    try:
        links = api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/roll_out/links")
    except (AirflowRejected, AirflowUnavailable):  # no such task instance yet: no link
        return None
    return (links.get("extra_links") or {}).get("Rollout in Prometheus") or None


def summarize(api: Api, run: dict, airflow_url: str, mlflow_url: str,
              prometheus_url: str = "") -> dict:
    run_id = run["dag_run_id"]
    trained = api.xcom(run_id, "train") or {}
    image = api.xcom(run_id, "record_image") or {}
    pull = api.xcom(run_id, "open_pull_request")
    served = api.xcom(run_id, "roll_out")
    tasks = {ti["task_id"]: ti for ti in
             api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]}
    states = {task_id: ti["state"] for task_id, ti in tasks.items()}
    gate = api.xcom(run_id, "quality_gate") or {}
    mlflow_run = trained.get("run_id")
    return {
        "dag_run_id": run_id,
        "state": run["state"],
        # Shipped means an image was pushed and the champion moved to it.
        "shipped": states.get("promote") == "success" and bool(image.get("digest")),
        "gate": gate.get("reason"),
        "test_accuracy": (trained.get("metrics") or {}).get("test_accuracy"),
        "mlflow_run_id": mlflow_run,
        "mlflow_url": mlflow_url,
        "mlflow_run_url": (f"{mlflow_url}/#/experiments/{trained.get('experiment_id')}/runs/"
                           f"{mlflow_run}") if mlflow_run else None,
        "image": image.get("digest_ref"),
        "serving": served if isinstance(served, dict) else None,
        "image_tags": [t for t in (image.get("image"), image.get("latest")) if t],
        "pull_request": (pull or {}).get("pull_request") if isinstance(pull, dict) else None,
        "pull_request_state": states.get("open_pull_request"),
        "task_states": states,
        "skip_reasons": skip_reasons(api, run_id, tasks),
        "airflow_url": f"{airflow_url}/dags/{DAG_ID}/runs/{run_id}",
        "prometheus_url": prometheus_url or None,
        "rollout_graph": rollout_graph(api, run_id) if prometheus_url else None,
        "note": run.get("note"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--airflow-url", required=True)
    parser.add_argument("--admin-password-file", type=Path, required=True)
    parser.add_argument("--mlflow-url", required=True)
    parser.add_argument("--mlflow-admin-password-file", type=Path)
    parser.add_argument("--pipeline-password-file", type=Path,
                        help="the DAG's own Airflow account (run notes), from airflow-stack")
    parser.add_argument("--sha", required=True)
    parser.add_argument("--repository", default="local/rice-mlops")
    parser.add_argument("--summary", type=Path, default=Path(".demo/summary.json"))
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--data-dir", help="the dataset the run trains on (for the summary)")
    parser.add_argument("--prometheus-url", default="",
                        help="the stack's Prometheus, when it has one (the compose stack)")
    parser.add_argument("--synthetic", action="store_true",
                        help="the dataset is the embedded synthetic one")
    args = parser.parse_args(argv)
    # From the environment, never the command line, where every local user's `ps` reads it.
    secret = readers.secret(os.environ, "GITHUB_WEBHOOK_SECRET")
    if not secret:
        parser.error("GITHUB_WEBHOOK_SECRET is not set: export the webhook secret first")

    api = Api(args.airflow_url, args.admin_password_file.read_text().strip())
    wait_for_dag(api)
    if args.pipeline_password_file and args.pipeline_password_file.is_file():
        host, _, port = args.airflow_url.removeprefix("http://").rstrip("/").partition(":")
        api.put_connection({"connection_id": "rice_airflow_api", "conn_type": "http",
                            "host": host, "port": int(port or 80), "login": "pipeline",
                            "password": args.pipeline_password_file.read_text().strip()})
    api.patch(f"/dags/{DAG_ID}", {"is_paused": False})
    delivery = str(uuid.uuid4())
    response = send(f"{args.airflow_url}/webhooks/github", secret,
                    push_payload("refs/heads/main", args.sha, args.repository),
                    delivery=delivery)
    print(f"demo: webhook delivery {delivery}: {response.status_code} {response.text}")
    if response.status_code != 200:
        return 1
    run_id = response.json()["dag_run_id"]
    mlflow_password = (args.mlflow_admin_password_file.read_text().strip()
                       if args.mlflow_admin_password_file and
                       args.mlflow_admin_password_file.is_file() else None)
    run = follow(api, run_id, args.timeout, LiveView(),
                 TrainingWatch(args.mlflow_url, mlflow_password, run_id), args.airflow_url)
    summary = summarize(api, run, args.airflow_url, args.mlflow_url, args.prometheus_url)
    summary["data"] = {"dir": args.data_dir, "synthetic": args.synthetic}
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    accuracy = summary["test_accuracy"]
    states = summary["task_states"]
    verdict = "shipped" if summary["shipped"] else "NOT SHIPPED"
    why = summary["skip_reasons"]
    image = summary["image"] or f"not pushed (push_image {states.get('push_image')}: " \
        f"{why.get('push_image', 'see its log')})"
    pull = summary["pull_request"] or (f"not opened (open_pull_request "
                                       f"{summary['pull_request_state']}: "
                                       f"{why.get('open_pull_request', 'see its log')})")
    served = summary["serving"] or {}
    endpoint = f"http://127.0.0.1:{readers.text(os.environ, 'RICE_ROLLOUT_PORT', '8501')}"
    serving = (f"{served.get('summary')} ({served.get('seconds')} s)\n"
               f"                 curl -s -H 'Content-Type: image/jpeg' --data-binary "
               f"@grain.jpg {endpoint}/predict" if served.get("served") else
               f"not served (roll_out {states.get('roll_out')}: "
               f"{why.get('roll_out', 'RICE_ROLLOUT=true serves it')})")
    data = args.data_dir or "-"
    if args.synthetic:
        data += ("\n                 synthetic grains; the real set is one variable away: "
                 "RICE_DATA_DIR=/path/to/rice make demo")
    print(f"""
== rice-mlops demo: {summary['state'].upper()}, {verdict} ==
run              {summary['dag_run_id']}
data             {data}
outcome          {summary['note'] or '-'}
test accuracy    {f'{accuracy:.4f}' if accuracy is not None else '-'}
quality gate     {summary['gate'] or '-'}
MLflow run       {summary['mlflow_run_url'] or '-'}
                 log in as admin, password in {args.mlflow_admin_password_file or '-'}
image            {image}
serving          {serving}
pull request     {pull}
Airflow UI       {summary['airflow_url']}
                 log in as admin, password in {args.admin_password_file}
Prometheus       {summary['rollout_graph'] or summary['prometheus_url'] or
                  'none in this stack (the compose stack has one: docs/monitoring.md)'}
summary          {args.summary}        stop everything: make down
""")
    return 0 if summary["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
