"""Webhook answer time at a steady rate while the CPU is busy, per way of sending (issue 25).

    .venv/bin/python benchmarks/webhook_load.py [--rate 20] [--seconds 15] [--burn 2]
                                                [--api-workers 1] [--bursts 0]

Starts the repository's Airflow processes on PostgreSQL with the webhook plugin (DAG paused),
triggers 20 commits once, then sends their redeliveries at `--rate` per second while `--burn`
busy processes at nice 10 stand in for a training, in three ways, each twice, alternating:

- `new-client`: a new httpx client per delivery (what `rice-mlops webhook send` does once);
- `close`: one client, a new TCP connection per delivery (as GitHub's deliveries arrive);
- `keep-alive`: one client, pooled connections.

The server is the same in all three; the differences are the sender's own cost. With
`--bursts N`, N more phases send 20 commits it has not seen at `--rate` (each a REST trigger:
the receiver's own tail) through one client, a new connection each. Appends to
benchmarks/results/webhook_load.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

SECRET = "benchmark secret, long enough to be accepted"
COMMITS = [f"{i + 1:040x}" for i in range(20)]


def _percentiles(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    return {"p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(ms[max(0, int(len(ms) * 0.99) - 1)], 1), "max_ms": round(ms[-1], 1)}


def _paced(url: str, commits: list[str], rate: int, client: httpx.Client | None) -> dict:
    """Push `commits` in order at `rate` per second (a new httpx client per delivery when
    `client` is None); the answers by status and the answer times."""
    from rice_mlops.ingress.send import push_payload, send

    start = time.monotonic()

    def one(i: int) -> tuple[int, float]:
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        began = time.perf_counter()
        answer = send(url, SECRET, push_payload("refs/heads/main", commits[i], "acme/rice"),
                      timeout=15, client=client)
        return answer.status_code, time.perf_counter() - began

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(one, range(len(commits))))
    codes: dict[str, int] = {}
    for code, _ in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    return {"answers": codes, **_percentiles([s for _, s in results])}


def _client(headers: dict | None = None) -> httpx.Client:
    return httpx.Client(headers=headers, limits=httpx.Limits(max_connections=64))


def _burst(url: str, rate: int, tag: str) -> dict:
    """20 commits never sent before, at `rate`: each answer waits for its REST trigger."""
    commits = [hashlib.sha1(f"{tag} {i}".encode()).hexdigest() for i in range(len(COMMITS))]
    with _client({"Connection": "close"}) as client:
        return {"mode": "new-commits", **_paced(url, commits, rate, client)}


def _phase(url: str, mode: str, rate: int, seconds: int) -> dict:
    """Redeliveries of the known commits for `seconds`, sent the way `mode` names."""
    commits = [COMMITS[i % len(COMMITS)] for i in range(rate * seconds)]
    if mode == "new-client":
        return {"mode": mode, **_paced(url, commits, rate, None)}
    with _client({"Connection": "close"} if mode == "close" else None) as client:
        return {"mode": mode, **_paced(url, commits, rate, client)}


def main() -> int:
    from results_log import record

    from rice_mlops.ingress.send import push_payload, send
    from tests.helpers.airflow_stack import AirflowStack
    from tests.helpers.ports import free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--burn", type=int, default=2, help="busy processes at nice 10")
    parser.add_argument("--api-workers", type=int, default=1, help="AIRFLOW__API__WORKERS")
    parser.add_argument("--bursts", type=int, default=0, help="phases of 20 new commits")
    args = parser.parse_args()

    pg_env = {**os.environ, "PGPORT": str(free_port()), "PG_DB": "airflow_bench"}
    postgres = REPO / "scripts" / "postgres"
    subprocess.run([postgres, "start"], env=pg_env, check=True)
    env = {"GITHUB_WEBHOOK_SECRET": SECRET, "GITHUB_WEBHOOK_REPOSITORIES": "acme/rice",
           "RICE_SCHEDULE": "none", "AIRFLOW__API__WORKERS": str(args.api_workers),
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": subprocess.run(
               [postgres, "url"], env=pg_env, check=True, capture_output=True,
               text=True).stdout.strip()}
    stack = AirflowStack(home=Path(tempfile.mkdtemp(prefix="bench-webhook-load-")),
                         port=free_port(), env=env)
    burners: list[subprocess.Popen] = []
    phases = []
    try:
        stack.start()
        stack.wait_for_dag()  # left paused: runs are created, not executed
        url = f"{stack.url}/webhooks/github"
        for commit in COMMITS:  # the REST triggers happen here, not in the measured phases
            answer = send(url, SECRET, push_payload("refs/heads/main", commit, "acme/rice"),
                          delivery=str(uuid.uuid4()), timeout=30)
            assert answer.status_code == 200, answer.text
        burners = [subprocess.Popen(["nice", "-n", "10", sys.executable, "-c",
                                     "while True: pass"]) for _ in range(args.burn)]
        for mode in ("new-client", "close", "keep-alive") * 2 if args.seconds else ():
            phases.append(_phase(url, mode, args.rate, args.seconds))
            print(json.dumps(phases[-1]), flush=True)
        for burst in range(args.bursts):
            phases.append(_burst(url, args.rate, f"burst {uuid.uuid4()} {burst}"))
            print(json.dumps(phases[-1]), flush=True)
            time.sleep(3)
    finally:
        for burner in burners:
            burner.kill()
        stack.stop()
        subprocess.run([postgres, "destroy"], env=pg_env, check=False)
    from rice_mlops.ingress.settings import TRIGGERS_AT_ONCE

    record("webhook_load", {"rate_per_s": args.rate, "seconds_per_phase": args.seconds,
                            "triggers_at_once": TRIGGERS_AT_ONCE,
                            "burn_processes": args.burn, "api_workers": args.api_workers,
                            "phases": phases})
    return 0


if __name__ == "__main__":
    sys.exit(main())
