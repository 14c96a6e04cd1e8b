"""Webhook response time, REST trigger included, over 200 signed deliveries.

    .venv/bin/python benchmarks/webhook.py [--deliveries 200] [--database postgres|sqlite]

Starts the repository's Airflow processes (and PostgreSQL) with the webhook plugin, leaves the
DAG paused so runs are created but not executed (the cost measured is verify + filter +
token + POST dagRuns), sends sequential signed push deliveries to /webhooks/github and reports
client-side p50/p99. Appends to benchmarks/results/webhook.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))


def main() -> int:
    from results_log import record

    from rice_mlops.ingress.send import push_payload
    from rice_mlops.ingress.signature import sign
    from tests.helpers.airflow_stack import AirflowStack
    from tests.helpers.ports import free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    args = parser.parse_args()

    secret = "benchmark-secret"
    env = {"GITHUB_WEBHOOK_SECRET": secret, "GITHUB_WEBHOOK_REPOSITORIES": "acme/rice",
           "RICE_SCHEDULE": "none",
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
    pg_env = {**os.environ, "PGPORT": str(free_port()), "PG_DB": "airflow_bench"}
    if args.database == "postgres":
        subprocess.run([REPO / "scripts" / "postgres", "start"], env=pg_env, check=True)
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = subprocess.run(
            [REPO / "scripts" / "postgres", "url"], env=pg_env, check=True,
            capture_output=True, text=True).stdout.strip()
    stack = AirflowStack(home=Path(tempfile.mkdtemp(prefix="bench-webhook-")), port=free_port(),
                         env=env)
    stack.start()
    try:
        stack.wait_for_dag()  # left paused: runs are created, not executed
        url = f"{stack.url}/webhooks/github"
        times = []
        with httpx.Client(timeout=15) as client:
            for i in range(args.deliveries + 10):
                body = json.dumps(push_payload("refs/heads/main", f"{i + 1:040x}",
                                               "acme/rice")).encode()
                headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
                           "X-GitHub-Delivery": str(uuid.uuid4()),
                           "X-Hub-Signature-256": sign(secret, body)}
                started = time.perf_counter()
                response = client.post(url, content=body, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, response.text
                if i >= 10:  # the first deliveries fetch the token and warm the server
                    times.append(elapsed)
        runs = stack.api("GET", "/dags/rice_classifier_cicd/dagRuns",
                         params={"limit": 1}).json()["total_entries"]
    finally:
        stack.stop()
        if args.database == "postgres":
            subprocess.run([REPO / "scripts" / "postgres", "destroy"], env=pg_env)
    times.sort()
    record("webhook", {
        "database": args.database, "deliveries": len(times), "runs_created": runs,
        "p50_ms": round(statistics.median(times), 1),
        "p99_ms": round(times[int(len(times) * 0.99) - 1], 1),
        "max_ms": round(times[-1], 1),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
