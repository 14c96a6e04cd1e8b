"""What the prediction log (and the labelling queue) adds to a prediction's latency.

    .venv/bin/python benchmarks/prediction_log.py [--data ../shared/rice] [--requests 1500]

Five servers of the same model run side by side as separate processes on loopback, as the
serving image runs them (`rice_mlops.serving.server.serve`, 2 inference slots): one without a
log, one with the prediction log, one with the log and the labelling queue sampling every
image (its worst case; deployments sample a small share), and two at their caps: a log whose
files are full (it rotates every few lines) and a labelling queue that is full (every sampled
image refused and counted on /metrics). The model is the default
architecture at the default size (64 px, 5 classes), untrained: latency does not depend on the
weights. Real rice JPEGs are sent sequentially on one keep-alive connection per server,
in blocks of 50 requests that take turns (off, log, log+labelling, off, ...) so the machine's
drift hits every variant alike, while a server's own background writing still falls on its own
next requests (interleaved request by request, it fell on the other servers' and made the log
look faster than none). Twice: back to back (the worst case) and paced at `--rate` requests a
second (a service with gaps between requests). Reports p50/p99 per variant and the added
share (goal: under 5 %).
Results are printed and appended to benchmarks/results/prediction_log.jsonl.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "include"))

BLOCK = 50
CLASSES = ["Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag"]
SERVE = ("from rice_mlops.serving.server import serve;"
         "from rice_mlops.serving.settings import Settings;"
         "serve(Settings.from_env())")


def model_dir(root: Path) -> Path:
    import keras

    from rice_mlops.compute.export import export_tflite
    from rice_mlops.compute.model import build_model

    keras.utils.set_random_seed(1)
    directory = root / "model"
    directory.mkdir()
    export_tflite(build_model(len(CLASSES), 64), directory / "model.tflite")
    (directory / "labels.json").write_text(json.dumps({"classes": CLASSES}))
    (directory / "metadata.json").write_text(json.dumps({
        "model_name": "rice-classifier", "model_version": "1", "run_id": "bench",
        "image_size": 64}))
    return directory


def start(stack: ExitStack, model: Path, extra: dict[str, str]) -> int:
    from serving import free_port, wait_ping  # the serving benchmark's own helpers

    port = free_port()
    env = {**os.environ, "RICE_MODEL_DIR": str(model), "RICE_HOST": "127.0.0.1",
           "RICE_PORT": str(port), "RICE_SERVING_INFERENCE_SLOTS": "2",
           "PYTHONPATH": str(REPO / "include"), "RICE_LOG_LEVEL": "WARNING", **extra}
    process = subprocess.Popen([sys.executable, "-c", SERVE], env=env)
    stack.callback(lambda: (process.terminate(), process.wait(30)))
    wait_ping(port, time.perf_counter(), timeout=60)
    return port


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(connections: dict, bodies: list[bytes], requests: int, interval: float
            ) -> dict[str, list[float]]:
    """Latencies (ms) per variant: requests back to back (`interval` 0: a server's background
    writing falls on its next request), or one due every `interval` seconds (as a service
    with gaps between requests sees them)."""
    times: dict[str, list[float]] = {name: [] for name in connections}
    for block in range(requests // BLOCK + 2):  # the first 2 blocks warm up
        for name, connection in connections.items():
            due = time.perf_counter()
            for index in range(block * BLOCK, (block + 1) * BLOCK):
                time.sleep(max(0.0, due - time.perf_counter()))
                due += interval
                started = time.perf_counter()
                connection.request("POST", "/predict", bodies[index % len(bodies)],
                                   {"Content-Type": "image/jpeg", "X-Request-Id": f"b{index}"})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise SystemExit(f"{name}: {response.status}")
                if block >= 2:
                    times[name].append((time.perf_counter() - started) * 1000)
    return times


def summarised(times: dict[str, list[float]]) -> dict:
    summary = {name: {"p50_ms": round(statistics.median(v), 3),
                      "p99_ms": round(percentile(v, 0.99), 3), "n": len(v)}
               for name, v in times.items()}
    for name in ("log", "log_and_labelling", "log_at_cap", "labelling_full"):
        summary[f"{name}_added_p50_percent"] = round(
            100 * (summary[name]["p50_ms"] / summary["off"]["p50_ms"] - 1), 1)
        summary[f"{name}_added_p99_percent"] = round(
            100 * (summary[name]["p99_ms"] / summary["off"]["p99_ms"] - 1), 1)
    return summary


def dropped(connection: http.client.HTTPConnection) -> dict[str, float]:
    """The server's own counts of what its log and labelling queue wrote and dropped."""
    from prometheus_client.parser import text_string_to_metric_families

    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith(("rice_serving_prediction_log", "rice_serving_labelling"))
            and sample.name.endswith("_total")}


def main() -> int:
    from results_log import record

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "rice")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=100.0,
                        help="requests a second of the paced stream")
    args = parser.parse_args()
    images = sorted((args.data / "test").rglob("*.jpg"))[:: max(1, 1000 // 200)][:200]
    if not images:
        raise SystemExit(f"no JPEG under {args.data / 'test'}: pass --data")
    bodies = [path.read_bytes() for path in images]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        model = model_dir(root)
        variants = {
            "off": {},
            "log": {"RICE_SERVING_PREDICTION_LOG_DIR": str(root / "log")},
            "log_and_labelling": {"RICE_SERVING_PREDICTION_LOG_DIR": str(root / "log2"),
                                  "RICE_SERVING_LABELLING_DIR": str(root / "labelling"),
                                  "RICE_SERVING_LABELLING_SAMPLE_RATE": "1",
                                  "RICE_SERVING_LABELLING_MAX_IMAGES": "1000000",
                                  "RICE_SERVING_LABELLING_MAX_BYTES": str(10**10)},
            # Both at their caps: the log's files full, so it rotates every ~10 lines (its
            # worst case), and a labelling queue already holding its one image, so every
            # sampled image is refused and counted.
            "log_at_cap": {"RICE_SERVING_PREDICTION_LOG_DIR": str(root / "log3"),
                           "RICE_SERVING_PREDICTION_LOG_MAX_BYTES": "4096",
                           "RICE_SERVING_PREDICTION_LOG_BACKUPS": "1"},
            "labelling_full": {"RICE_SERVING_PREDICTION_LOG_DIR": str(root / "log4"),
                               "RICE_SERVING_LABELLING_DIR": str(root / "labelling2"),
                               "RICE_SERVING_LABELLING_SAMPLE_RATE": "1",
                               "RICE_SERVING_LABELLING_MAX_IMAGES": "1"}}
        connections = {name: http.client.HTTPConnection(
            "127.0.0.1", start(stack, model, extra), timeout=30)
            for name, extra in variants.items()}
        results = {}
        for mode, interval in (("back_to_back", 0.0), ("paced", 1 / args.rate)):
            times = measure(connections, bodies, args.requests, interval)
            results[mode] = summarised(times)
        time.sleep(1)  # the writers catch up before the files are counted
        results["log_lines_written"] = sum(1 for _ in (root / "log" / "predictions.jsonl").open())
        results["labelling_images_kept"] = len(list((root / "labelling").glob("*.jpg")))
        results["at_cap"] = {
            "log_files": sorted(p.name for p in (root / "log3").iterdir()),
            "log_bytes_on_disk": sum(p.stat().st_size for p in (root / "log3").iterdir()),
            "labelling_images_kept": len(list((root / "labelling2").glob("*.jpg"))),
            "metrics": {name: dropped(connections[name]) for name in ("log_at_cap",
                                                                      "labelling_full")}}
        results["paced_rate_rps"] = args.rate
    record("prediction_log", {"load_average_1m": round(os.getloadavg()[0], 2), **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
