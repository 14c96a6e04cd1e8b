"""Smoke test run inside the built image: start the server, wait for /ping, classify the smoke
set (the test split, bounded) through /predict, and

- measure the served answers' test accuracy and per-class recall against the images' true
  classes, refusing below `--min-test-accuracy` or a class below `--min-class-recall` (the bar
  and the floor come from the operator's command line, never from the smoke set);
- compare every answer with the release zone's LiteRT reference in `expected.json`;
- check that /metrics answers and counted exactly those requests.

    python3 -m rice_mlops.serving.smoke --smoke-dir DIR --min-test-accuracy A
        --min-class-recall R [--tolerance 1e-4]

Exits 0 when every rule holds; its last output line is `smoke: measured {json}`.
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


MEASURED = "smoke: measured "


def check(port: int, smoke_dir: Path, tolerance: float
          ) -> tuple[list[str], list[tuple[str, str]]]:
    """(failures, [(true class, served class)]) over the smoke set."""
    expected = json.loads((smoke_dir / "expected.json").read_text())
    classes = expected["classes"]
    failures, pairs, mismatches = [], [], 0
    for item in expected["images"]:
        data = (smoke_dir / item["file"]).read_bytes()
        status, body = _request(port, "POST", "/predict", data, {"Content-Type": "image/jpeg"})
        if status != 200:
            failures.append(f"{item['file']}: HTTP {status} {body[:200]!r}")
            continue
        answer = json.loads(body)
        pairs.append((item["label"], answer["class"]))
        worst = max(abs(answer["probabilities"][c] - p)
                    for c, p in zip(classes, item["probabilities"], strict=True))
        if answer["class"] != item["class"] or worst > tolerance:
            mismatches += 1
            if mismatches <= 20:  # the first ones are enough to read
                print(f"smoke: {item['file']}: served {answer['class']}, LiteRT "
                      f"{item['class']}, max |dp| {worst:.2e} MISMATCH", flush=True)
            failures.append(f"{item['file']}: served {answer['class']} vs LiteRT "
                            f"{item['class']}, max probability difference {worst:.2e} > "
                            f"{tolerance:.0e}")
    print(f"smoke: {len(pairs)} of {len(expected['images'])} images answered, {mismatches} "
          "differ from the release zone's LiteRT reference", flush=True)
    return failures + check_metrics(port, len(pairs)), pairs


def measure(pairs: list[tuple[str, str]], classes: list[str], min_test_accuracy: float,
            min_class_recall: float) -> tuple[dict, list[str]]:
    """Accuracy and recall per class of the served answers, and the rules they break."""
    correct = sum(true == served for true, served in pairs)
    accuracy = correct / len(pairs) if pairs else 0.0
    recall = {}
    for cls in classes:
        support = [served for true, served in pairs if true == cls]
        recall[cls] = sum(served == cls for served in support) / len(support) if support else 0.0
    refusals = []
    if not pairs or accuracy < min_test_accuracy:
        refusals.append(f"test accuracy {accuracy:.4f} ({correct}/{len(pairs)}) below the bar "
                        f"{min_test_accuracy:.4f}")
    refusals += [f"recall of class {cls} {value:.4f} below the floor {min_class_recall:.4f}"
                 for cls, value in recall.items() if value < min_class_recall]
    return {"accuracy": accuracy, "correct": correct, "images": len(pairs), "recall": recall,
            "min_test_accuracy": min_test_accuracy, "min_class_recall": min_class_recall,
            "passed": not refusals}, refusals


def parse_measurement(output: str) -> dict:
    """The measurement from the smoke test's output (its last `smoke: measured` line)."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith(MEASURED):
            return json.loads(line[len(MEASURED):])
    raise ValueError("the smoke test printed no measurement")


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


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-dir", type=Path, required=True)
    parser.add_argument("--min-test-accuracy", type=_fraction, required=True)
    parser.add_argument("--min-class-recall", type=_fraction, required=True)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)

    env = {**os.environ, "RICE_HOST": "127.0.0.1", "RICE_PORT": str(args.port)}
    server = subprocess.Popen([sys.executable, "-m", "rice_mlops.serving"], env=env)
    try:
        ready = wait_for_ping(args.port, server, args.timeout)
        print(f"smoke: /ping answered 200 after {ready:.2f}s", flush=True)
        failures, pairs = check(args.port, args.smoke_dir, args.tolerance)
    finally:
        server.terminate()
        server.wait(timeout=10)
    classes = json.loads((args.smoke_dir / "expected.json").read_text())["classes"]
    measured, refusals = measure(pairs, classes, args.min_test_accuracy, args.min_class_recall)
    print(f"smoke: measured in the image: test accuracy {measured['accuracy']:.4f} "
          f"({measured['correct']}/{measured['images']}), recall "
          + ", ".join(f"{c} {v:.4f}" for c, v in measured["recall"].items()), flush=True)
    code = 0
    if refusals:
        print("smoke: REFUSED below the bar or a class floor: " + "; ".join(refusals),
              flush=True)
        code = 1
    if failures:
        print("smoke: FAILED: the image does not reproduce the release zone's LiteRT "
              "reference:", flush=True)
        for failure in failures[:20]:
            print(f"smoke:   {failure}", flush=True)
        code = 1
    if code == 0:
        print("smoke: passed", flush=True)
    print(MEASURED + json.dumps(measured, sort_keys=True), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
