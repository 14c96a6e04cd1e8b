"""Cost curves, side by side in one run (issue 39): what more work costs.

    scripts/docker-engine start   # the serving part runs a built serving image
    .venv/bin/python benchmarks/cost_curves.py --image rice-classifier-build:<run id>
        [--data ../shared/rice] [--parts train,serving,monitoring]

- train: seconds per epoch and images per second of the default recipe's fit (no MLflow) on
  1,000, 3,500 and 7,000 training images (equal per class; 7,000 takes every image of the set,
  val and test included, since only the fit's cost is measured). The first epoch decodes into
  the cache; the second is the steady cost, set against one pass of the same tf.data batches
  without the model: when that pass is most of an epoch, the input, not the model, bounds it.
- serving: requests per second of POST /predict (one real JPEG, keep-alive, 8 concurrent
  clients from ApacheBench pinned to the other core) against the image's server pinned to one
  core (`docker run --cpuset-cpus 0`), and the LiteRT Interpreter's own invoke rate on the same
  model, in the same image, on the same core: their ratio is what the server costs.
- monitoring: seconds and peak memory of one drift window of 10 k, 100 k and 1 M prediction-log
  lines (benchmarks/monitoring.py in a child process, its resident memory sampled every 50 ms).

Appends to results/cost_curves.jsonl and prints one Markdown table per part.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "include"))

SIZES = (1000, 3500, 7000)
LINES = (10_000, 100_000, 1_000_000)
# Runs inside the serving image (python3 -c): the Interpreter alone, as the server calls it.
INVOKE = r"""
import json, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path="/opt/model/model.tflite", num_threads=1)
interpreter.allocate_tensors()
entry = interpreter.get_input_details()[0]
pixels = np.random.default_rng(0).random(entry["shape"], dtype=np.float32)
for _ in range(50):
    interpreter.set_tensor(entry["index"], pixels); interpreter.invoke()
n, started = 0, time.perf_counter()
while time.perf_counter() - started < float(sys.argv[1]):
    interpreter.set_tensor(entry["index"], pixels); interpreter.invoke(); n += 1
print(json.dumps({"invokes": n, "seconds": time.perf_counter() - started}))
"""


def training_set(source: Path, target: Path, train_images: int) -> Path:
    """Train/val/test copies: `train_images` spread over the classes (from train, then val and
    test when train runs out), 100 val and 100 test images per class."""
    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
    per_class = train_images // len(classes)
    for cls in classes:
        pool = [p for split in ("train", "val", "test")
                for p in sorted((source / split / cls).iterdir())]
        if len(pool) < per_class:
            raise SystemExit(f"{source}: {cls} has {len(pool)} images, {per_class} asked")
        for split, files in (("train", pool[:per_class]),
                             ("val", sorted((source / "val" / cls).iterdir())[:100]),
                             ("test", sorted((source / "test" / cls).iterdir())[:100])):
            out = target / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for image in files:
                shutil.copy2(image, out / f"{split}-{image.parent.parent.name}-{image.name}")
    return target


def _EpochClock():  # noqa: N802 - a class made when Keras is imported
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    return EpochClock()


def train_curve(data: Path) -> list[dict]:
    import keras

    from rice_mlops.compute.data import discover
    from rice_mlops.compute.recipe import compiled_recipe
    from rice_mlops.compute.training_config import TrainConfig

    rows = []
    for size in SIZES:
        with tempfile.TemporaryDirectory(prefix="rice-curve-") as scratch:
            config = TrainConfig(data_dir=training_set(data, Path(scratch), size), epochs=2)
            recipe = compiled_recipe(config, discover(config.data_dir))
            clock = _EpochClock()
            recipe.fit(2, [clock])
            seconds = clock.seconds
            started = time.perf_counter()
            for _ in recipe.train:  # the input alone: decoded (cached), augmented, batched
                pass
            input_seconds = time.perf_counter() - started
        images = recipe.counts["train"]
        rows.append({"train_images": images, "first_epoch_s": round(seconds[0], 1),
                     "epoch_s": round(seconds[1], 1),
                     "images_per_s": round(images / seconds[1], 1),
                     "input_pass_s": round(input_seconds, 1),
                     "input_share": round(input_seconds / seconds[1], 2)})
        keras.backend.clear_session()
        print(rows[-1], flush=True)
    return rows


def serving_curve(image: str, jpeg: Path, seconds: float = 20.0) -> dict:
    port = 18181
    name = f"rice-cost-curve-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", "host",
                    "--cpuset-cpus", "0", "-e", f"RICE_PORT={port}", "-e", "RICE_WORKERS=1",
                    image], check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/ping"],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("the serving image did not answer /ping in 60 s")
            time.sleep(0.2)
        def bench(*limit: str) -> str:
            return subprocess.run(
                ["taskset", "-c", "1", "ab", "-k", "-q", "-c", "8", *limit, "-p", str(jpeg),
                 "-T", "image/jpeg", f"http://127.0.0.1:{port}/predict"],
                capture_output=True, text=True, check=True).stdout

        bench("-n", "500")  # warm-up
        out = bench("-t", str(int(seconds)), "-n", "10000000")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    fields = {line.split(":")[0].strip(): line.split(":", 1)[1].strip()
              for line in out.splitlines() if ":" in line}
    failed = int(fields["Failed requests"].split()[0]) + int(
        fields.get("Non-2xx responses", "0").split()[0])
    rps = float(fields["Requests per second"].split()[0])
    invoke = json.loads(subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--cpuset-cpus", "0", "--entrypoint",
         "python3", image, "-c", INVOKE, str(seconds)],
        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    invoke_rate = invoke["invokes"] / invoke["seconds"]
    return {"image": image, "server_requests_per_s": rps, "failed": failed,
            "interpreter_invokes_per_s": round(invoke_rate, 1),
            "server_share_of_interpreter": round(rps / invoke_rate, 3)}


def monitoring_curve(data: Path) -> list[dict]:
    import psutil

    rows = []
    for lines in LINES:
        child = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "monitoring.py"),
                                  "--images", str(data), "--lines", str(lines)],
                                 stdout=subprocess.PIPE, text=True)
        peak, process = 0, psutil.Process(child.pid)
        while child.poll() is None:
            try:
                peak = max(peak, process.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        out = child.stdout.read()
        if child.returncode != 0:
            raise SystemExit(f"monitoring.py --lines {lines} failed")
        result = json.loads(out[out.index("{"):])
        rows.append({"lines": lines, "log_mib": result["log_mib"],
                     "read_s": result["read_seconds"], "judge_s": result["judge_seconds"],
                     "peak_rss_mib": round(peak / 2**20, 1),
                     "window_peak_rss_mib": result["window_peak_rss_mib"]})
        print(rows[-1], flush=True)
    return rows


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
                      *("| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows)])


def main() -> int:
    from results_log import record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "rice")
    parser.add_argument("--image", help="a built serving image (for the serving part)")
    parser.add_argument("--parts", default="train,serving,monitoring")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result: dict = {"data": str(args.data)}
    if "train" in parts:
        result["train"] = train_curve(args.data)
    if "serving" in parts:
        if not args.image:
            parser.error("the serving part needs --image (a built serving image)")
        jpeg = sorted((args.data / "test" / "Basmati").iterdir())[0]
        result["serving"] = serving_curve(args.image, jpeg)
    if "monitoring" in parts:
        result["monitoring"] = monitoring_curve(args.data)
    record("cost_curves", result)
    for part in ("train", "monitoring"):
        if part in result:
            print(f"\n{part}\n{_table(result[part])}")
    if "serving" in result:
        print(f"\nserving\n{_table([result['serving']])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
