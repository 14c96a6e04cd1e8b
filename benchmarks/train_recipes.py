"""Our training recipe against the seed's, side by side on the same 5,000 real images.

    make bench-train            (or: .venv/bin/python benchmarks/train_recipes.py [--data DIR])
    .venv/bin/python benchmarks/train_recipes.py --skip-seed \
        --recipe image_size=96 --recipe epochs=40,learning_rate=0.003     (a sweep of ours)

1. Ours: `rice_mlops.compute.training_run.train` with its defaults, logged to a real MLflow server
   started for the benchmark; reports test accuracy, fit time, wall time of the whole call, and the
   time at which validation accuracy first reached 99 %.
2. The seed's recipe as DESIGN.md describes it: legacy ImageDataGenerator (rescale 1/255,
   rotation 20, zoom 0.2, horizontal flip) reading JPEGs every epoch, its CNN at 128 px, batch
   32, Adam, EarlyStopping and ReduceLROnPlateau on val_loss; trained for the same wall-clock
   budget as ours took, then evaluated on the test split.
Results are printed as JSON and appended to benchmarks/results/train_recipes.jsonl.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))


def recipe(text: str) -> dict:
    """`image_size=96,epochs=40`: TrainConfig fields over the defaults (TrainConfig checks
    the values)."""
    from rice_mlops.compute.training_config import TrainConfig

    kinds = {"epochs": int, "image_size": int, "batch_size": int, "learning_rate": float,
             "seed": int}
    overrides = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in kinds:
            raise argparse.ArgumentTypeError(f"{name!r} is not one of {sorted(kinds)}")
        overrides[name] = kinds[name](value)
    TrainConfig(data_dir=Path("."), **overrides)
    return overrides


def run_ours(data: Path, overrides: dict | None = None) -> dict:
    import mlflow

    from rice_mlops.compute.training_config import TrainConfig
    from rice_mlops.compute.training_run import train

    started = time.perf_counter()
    config = TrainConfig(data_dir=data, experiment="bench-train-recipes", **(overrides or {}))
    result = train(config)
    wall = time.perf_counter() - started
    client = mlflow.MlflowClient()
    run = client.get_run(result["run_id"])
    history = client.get_metric_history(result["run_id"], "val_accuracy")
    start_ms = run.info.start_time
    reached = [(m.timestamp - start_ms) / 1000 for m in sorted(history, key=lambda m: m.step)
               if m.value >= 0.99]
    return {
        "recipe": "rice-mlops default (rice_cnn, 64 px, cached tf.data, flips/rot90, cosine)",
        "overrides": overrides or {},
        "test_images": result["counts"].get("test") if isinstance(result["counts"], dict) else None,
        "test_accuracy": result["metrics"]["test_accuracy"],
        "val_accuracy": result["metrics"]["val_accuracy"],
        "epochs": result["epochs_run"],
        "fit_seconds": round(result["train_seconds"], 1),
        "wall_seconds": round(wall, 1),
        "seconds_to_99_val": round(reached[0], 1) if reached else None,
    }


def run_seed(data: Path, budget_seconds: float) -> dict:
    import keras
    from keras import layers
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    keras.utils.set_random_seed(42)
    train_gen = ImageDataGenerator(rescale=1 / 255, rotation_range=20, zoom_range=0.2,
                                   horizontal_flip=True)
    plain = ImageDataGenerator(rescale=1 / 255)
    flow = {"target_size": (128, 128), "batch_size": 32, "class_mode": "sparse", "seed": 42}
    train = train_gen.flow_from_directory(data / "train", **flow)
    val = plain.flow_from_directory(data / "val", shuffle=False, **flow)
    test = plain.flow_from_directory(data / "test", shuffle=False, **flow)

    model = keras.Sequential([keras.Input((128, 128, 3))])
    for filters in (32, 64, 128):
        model.add(layers.Conv2D(filters, 3, activation="relu"))
        model.add(layers.MaxPooling2D())
    for layer in (layers.GlobalAveragePooling2D(), layers.Dense(256, activation="relu"),
                  layers.Dropout(0.5), layers.Dense(5, activation="softmax")):
        model.add(layer)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

    started = time.perf_counter()
    timeline: list[tuple[float, float]] = []

    class Budget(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if time.perf_counter() - started > budget_seconds:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            timeline.append((time.perf_counter() - started, float(logs.get("val_accuracy", 0))))
            print(f"seed epoch {epoch + 1}: {logs}", flush=True)

    callbacks = [Budget(),
                 keras.callbacks.EarlyStopping(monitor="val_loss", patience=5,
                                               restore_best_weights=True),
                 keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=3)]
    model.fit(train, validation_data=val, epochs=1000, verbose=0, callbacks=callbacks)
    fit_seconds = time.perf_counter() - started
    _, test_accuracy = model.evaluate(test, verbose=0)
    reached = [t for t, acc in timeline if acc >= 0.99]
    return {
        "recipe": "seed (ImageDataGenerator rescale/rotation/zoom/flip, seed CNN, 128 px, bs 32)",
        "test_accuracy": float(test_accuracy),
        "val_accuracy": timeline[-1][1] if timeline else None,
        "epochs": len(timeline),
        "fit_seconds": round(fit_seconds, 1),
        "budget_seconds": round(budget_seconds, 1),
        "seconds_to_99_val": round(reached[0], 1) if reached else None,
        "val_accuracy_by_epoch": [round(a, 4) for _, a in timeline],
    }


def main() -> int:
    from mlflow_server import mlflow_server
    from results_log import record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "rice")
    parser.add_argument("--skip-seed", action="store_true")
    parser.add_argument("--recipe", type=recipe, action="append",
                        help="train ours with these TrainConfig fields (repeatable: a sweep)")
    parser.add_argument("--label", default="",
                        help="what this code differs in (a change not a TrainConfig field)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "include"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    source = {"commit": commit + ("+changes" if dirty else ""), "label": args.label}

    if args.recipe:
        with tempfile.TemporaryDirectory(prefix="bench-mlflow-") as home, \
                mlflow_server(Path(home)):
            for overrides in args.recipe:
                result = run_ours(args.data, overrides)
                print(result, flush=True)
                record("train_sweep", {"data": str(args.data), **source, "ours": result})
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-") as home, \
            mlflow_server(Path(home)):
        ours = run_ours(args.data)
    seed = None if args.skip_seed else run_seed(args.data, ours["wall_seconds"])
    record("train_recipes", {
        "data": str(args.data), **source,
        "ours": ours,
        "seed": seed,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
