"""Seconds per epoch of the default recipe's fit alone: no MLflow, no export, so a slow
training can be told apart from a slow machine (issue 25).

    .venv/bin/python benchmarks/epoch_speed.py [--data ../shared/rice] [--epochs 4]
                                               [--no-determinism]

The data pipeline, model and optimizer are the training module's own. The first epoch also
decodes every image into the cache. Appends to results/epoch_speed.jsonl.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "include"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "rice")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--no-determinism", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    from results_log import record

    from rice_mlops.compute.data import discover
    from rice_mlops.compute.recipe import compiled_recipe
    from rice_mlops.compute.training_config import TrainConfig

    config = TrainConfig(data_dir=args.data, epochs=args.epochs)
    dataset = discover(config.data_dir)
    recipe = compiled_recipe(config, dataset, deterministic=not args.no_determinism)
    counts = recipe.counts
    seconds: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(round(time.perf_counter() - self.started, 1))

    recipe.fit(args.epochs, [Clock()])
    record("epoch_speed", {"data": str(args.data), "train_images": counts["train"],
                           "determinism": not args.no_determinism, "epoch_seconds": seconds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
