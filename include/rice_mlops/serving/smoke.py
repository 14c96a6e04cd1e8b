"""Smoke test run inside the built image: start the server, wait for /ping, classify real
images and compare with the MLflow model's predictions recorded in `expected.json`, then check
that /metrics answers and counted exactly those requests.

    python3 -m rice_mlops.serving.smoke --smoke-dir DIR [--tolerance 1e-4]

Exits 0 when every image gets the same class and probabilities within the tolerance.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _request(port: int, method: str, path: str, body: bytes = b"",
             headers: dict | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_for_ping(port: int, server: subprocess.Popen, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.poll() is not None:
            raise SystemExit(f"smoke: server exited with {server.returncode} before /ping")
        try:
            if _request(port, "GET", "/ping")[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"smoke: no 200 on /ping within {timeout:.0f}s")


def check(port: int, smoke_dir: Path, tolerance: float) -> list[str]:
    expected = json.loads((smoke_dir / "expected.json").read_text())
    classes = expected["classes"]
    failures = []
    answered = 0
    for item in expected["images"]:
        data = (smoke_dir / item["file"]).read_bytes()
        status, body = _request(port, "POST", "/predict", data, {"Content-Type": "image/jpeg"})
        if status != 200:
            failures.append(f"{item['file']}: HTTP {status} {body[:200]!r}")
            continue
        answered += 1
        answer = json.loads(body)
        worst = max(abs(answer["probabilities"][c] - p)
                    for c, p in zip(classes, item["probabilities"], strict=True))
        verdict = "ok" if answer["class"] == item["class"] and worst <= tolerance else "MISMATCH"
        print(f"smoke: {item['file']}: served {answer['class']}, MLflow {item['class']}, "
              f"max |dp| {worst:.2e} {verdict}", flush=True)
        if verdict != "ok":
            failures.append(f"{item['file']}: served {answer['class']} vs MLflow {item['class']}, "
                            f"max probability difference {worst:.2e} > {tolerance:.0e}")
    return failures + check_metrics(port, answered)


def check_metrics(port: int, answered: int) -> list[str]:
    """/metrics answers in Prometheus format and counted the smoke requests, no more."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = _request(port, "GET", "/metrics")
    if status != 200:
        return [f"/metrics: HTTP {status} {body[:200]!r}"]
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    counted = samples.get(("rice_serving_requests_total",
                           (("endpoint", "/predict"), ("status", "200"))), 0)
    predicted = sum(value for (name, _), value in samples.items()
                    if name == "rice_serving_predictions_total")
    info = [labels for name, labels in samples if name == "rice_serving_model_info"]
    print(f"smoke: /metrics counted {counted:.0f} /predict 200s and {predicted:.0f} "
          f"predictions for {answered} answered requests", flush=True)
    failures = []
    if counted != answered or predicted != answered:
        failures.append(f"/metrics counted {counted:.0f} /predict 200s and {predicted:.0f} "
                        f"predictions, but {answered} requests were answered")
    if not info:
        failures.append("/metrics has no rice_serving_model_info")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)

    env = {**os.environ, "RICE_HOST": "127.0.0.1", "RICE_PORT": str(args.port)}
    server = subprocess.Popen([sys.executable, "-m", "rice_mlops.serving"], env=env)
    try:
        ready = wait_for_ping(args.port, server, args.timeout)
        print(f"smoke: /ping answered 200 after {ready:.2f}s", flush=True)
        failures = check(args.port, args.smoke_dir, args.tolerance)
    finally:
        server.terminate()
        server.wait(timeout=10)
    if failures:
        print("smoke: FAILED: the image does not reproduce the MLflow model:", flush=True)
        for failure in failures:
            print(f"smoke:   {failure}", flush=True)
        return 1
    print("smoke: passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
