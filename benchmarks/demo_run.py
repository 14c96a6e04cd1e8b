"""`make demo` as a newcomer meets it: a fresh clone of one commit, its own `.venv`, engine,
registry, MLflow and Airflow; then where the run's time went, from the REST API's task
instances: `train`, everything else (the other tasks and the scheduling gaps between them),
and the slowest of the other tasks.

    .venv/bin/python benchmarks/demo_run.py [--commit HEAD] [--label after]

Nothing else may run on the machine meanwhile (the figures are wall times on shared cores),
and no other stack may hold the demo's ports. The clone is stopped (`make down`) and removed
afterwards. Appends a record to results/demo_run.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from results_log import record  # noqa: E402

from tests.helpers.pipeline import remove_serving_containers  # noqa: E402

SERVING_NAME = "rice-serving"  # the demo's RICE_ROLLOUT_NAME


def _when(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()  # 3.11 reads the trailing Z


def task_seconds(task_instance: dict) -> float:
    """How long one task instance ran."""
    return round(_when(task_instance["end_date"]) - _when(task_instance["start_date"]), 1)


def _api(url: str, token: str, path: str) -> dict:
    request = urllib.request.Request(f"{url}/api/v2{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def _token(url: str, password: str) -> str:
    request = urllib.request.Request(
        f"{url}/auth/token", data=json.dumps({"username": "admin", "password": password}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)["access_token"]


def run_times(task_instances: list[dict]) -> dict:
    """The run's wall time from its first task's start to its last task's end, `train`'s
    duration, and the rest: the other tasks and the gaps between them."""
    ran = [t for t in task_instances if t.get("start_date") and t.get("end_date")]
    start = min(_when(t["start_date"]) for t in ran)
    end = max(_when(t["end_date"]) for t in ran)
    train = next((_when(t["end_date"]) - _when(t["start_date"]) for t in ran
                  if t["task_id"] == "train"), 0.0)
    others = sorted(((task_seconds(t), t["task_id"]) for t in ran if t["task_id"] != "train"),
                    reverse=True)
    return {"run_s": round(end - start, 1), "train_s": round(train, 1),
            "overhead_s": round(end - start - train, 1),
            "idle_s": round(end - start - _busy(ran), 1),
            "queued_s": _queued(ran),
            "slowest_other_tasks": [{"task": task, "s": s} for s, task in others[:8]],
            "timeline": [{"task": t["task_id"],
                          "queued_s": (round(_when(t["queued_when"]) - start, 1)
                                       if t.get("queued_when") else None),
                          "from_s": round(_when(t["start_date"]) - start, 1),
                          "to_s": round(_when(t["end_date"]) - start, 1)}
                         for t in sorted(ran, key=lambda t: _when(t["start_date"]))]}


def _queued(ran: list[dict]) -> float:
    """How long the run's tasks waited from being queued to their first line: the executor's
    share of the idle time (Celery or the local executor, a task process, the DAG file parsed
    again). The rest of the idle time is the scheduler's, from one task's end to the next's
    queueing."""
    return round(sum(max(0.0, _when(t["start_date"]) - _when(t["queued_when"]))
                     for t in ran if t.get("queued_when")), 1)


def _busy(ran: list[dict]) -> float:
    """How long at least one task ran: the rest of the run is the scheduler's and the
    executor's (queueing, starting a task process)."""
    busy, reach = 0.0, float("-inf")
    for begin, finish in sorted((_when(t["start_date"]), _when(t["end_date"])) for t in ran):
        if finish > reach:
            busy += finish - max(begin, reach)
            reach = finish
    return busy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", args.commit], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.strip()
    serving = subprocess.run(["docker", "ps", "-aq", "--filter",
                              f"label=io.rice-mlops.serving={SERVING_NAME}"],
                             capture_output=True, text=True).stdout.split()
    if serving:  # a demo of yours: the clone's would take its name, and go with the clone
        raise SystemExit(f"{len(serving)} serving containers named {SERVING_NAME} are on the "
                         "engine (your own demo's?): remove them first (README, `docker rm -f "
                         f"$(docker ps -aq --filter label=io.rice-mlops.serving={SERVING_NAME})`)")
    work = Path(tempfile.mkdtemp(prefix="rice-demo-bench-"))
    clone = work / "rice-mlops"
    log = work / "demo.log"
    try:
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", commit], cwd=clone, check=True)
        started = time.monotonic()
        with log.open("w") as out:
            done = subprocess.run(["make", "demo"], cwd=clone, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=3600)
        demo_s = round(time.monotonic() - started, 1)
        if done.returncode != 0:
            print(log.read_text()[-3000:])
            raise SystemExit(f"make demo failed (exit {done.returncode}); log above")
        summary = json.loads((clone / ".demo" / "summary.json").read_text())
        url = "http://127.0.0.1:8080"
        token = _token(url, (clone / ".run" / "airflow" / "admin_password").read_text().strip())
        instances = _api(url, token, f"/dags/rice_classifier_cicd/dagRuns/"
                                     f"{summary['dag_run_id']}/taskInstances?limit=100")
        values = {"label": args.label, "commit": commit[:12], "make_demo_s": demo_s,
                  "shipped": summary.get("shipped"), "outcome": summary.get("note"),
                  **run_times(instances["task_instances"])}
    finally:
        # The demo keeps serving through `make down` (its next start restores it), and its
        # containers come back with the engine (restart: always); this clone's go with it.
        remove_serving_containers(SERVING_NAME)
        subprocess.run(["make", "down"], cwd=clone, capture_output=True, timeout=600)
        shutil.rmtree(work, ignore_errors=True)
    record("demo_run", values)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
