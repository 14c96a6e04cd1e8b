"""What an authenticated MLflow call costs with and without the server's credential cache.

Starts the repository's MLflow server (scripts/mlflow-server, basic-auth app) once per setting
of MLFLOW_AUTH_CACHE_SECONDS and times the same authenticated `experiments/search` on one
kept-alive session, plus the same call answered 401 (no credentials) as the floor.

    .venv/bin/python -m benchmarks.mlflow_auth [--calls 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests

from benchmarks.results_log import record
from tests.helpers.mlflow_server import MlflowServer

_SEARCH = "/api/2.0/mlflow/experiments/search"


def _timed(session: requests.Session, url: str, calls: int, auth) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        answer = session.post(url + _SEARCH, json={"max_results": 10}, auth=auth, timeout=30)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == (200 if auth else 401), answer.text[:200]
    return times


def _summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"first_ms": round(times[0], 1), "p50_ms": round(statistics.median(ordered[1:]), 1),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
            "max_ms": round(ordered[-1], 1)}


def measure(cache_seconds: int, calls: int) -> dict:
    os.environ["MLFLOW_AUTH_CACHE_SECONDS"] = str(cache_seconds)
    with tempfile.TemporaryDirectory(prefix="rice-bench-mlflow-") as home:
        server = MlflowServer(Path(home) / "mlflow")
        server.start()
        try:
            credentials = server.credentials
            auth = (credentials["MLFLOW_TRACKING_USERNAME"],
                    credentials["MLFLOW_TRACKING_PASSWORD"])
            with requests.Session() as session:
                authenticated = _timed(session, server.url, calls, auth)
                refused = _timed(session, server.url, calls, None)
        finally:
            server.stop()
    return {"auth_cache_seconds": cache_seconds, "authenticated": _summary(authenticated),
            "refused_401": _summary(refused)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    results = [measure(seconds, args.calls) for seconds in (0, 300)]
    record("mlflow_auth", {"calls": args.calls, "command":
                           "python -m benchmarks.mlflow_auth", "results": results})


if __name__ == "__main__":
    main()
