"""What `train` pays to log its Keras model to MLflow: with the pip requirements inferred by
MLflow (it loads the model again in a fresh interpreter to see what it imports) and named
(`rice_mlops.compute.training_run.model_requirements`, what the pipeline does), alternating.

    .venv/bin/python benchmarks/log_model.py [--repeat 2]

A throwaway SQLite tracking store; the rice CNN at 64 px, five classes. Appends a record to
results/log_model.jsonl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from results_log import record  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import mlflow
    import numpy as np

    from rice_mlops.compute.model import build_model
    from rice_mlops.compute.training_run import _signature, model_requirements

    store = Path(tempfile.mkdtemp(prefix="rice-log-model-"))
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    # Artifacts beside the store (the default root is ./mlruns under the working directory).
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "log-model", artifact_location=(store / "artifacts").as_uri()))
    model = build_model(5, 64)
    example = np.zeros((1, 64, 64, 3), np.float32)
    seconds: dict[str, list[float]] = {"inferred": [], "named": []}
    for _ in range(args.repeat):
        for label, extra in (("inferred", {}), ("named", {"pip_requirements":
                                                          model_requirements()})):
            with mlflow.start_run():
                started = time.perf_counter()
                mlflow.tensorflow.log_model(model, name="model", signature=_signature(5),
                                            input_example=example, **extra)
                seconds[label].append(round(time.perf_counter() - started, 2))
    shutil.rmtree(store, ignore_errors=True)
    record("log_model", {"seconds": seconds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
