"""Which test images the default recipe gets wrong, and whether a variant fixes them: the
recipe of `rice_mlops.compute.training_run.train` (same data pipeline, model, schedule and seed)
without MLflow, so a variant is a flag here and not a change to the pipeline.

    .venv/bin/python benchmarks/misclassified.py [--data ../shared/rice] [--label-smoothing 0.1]
        [--image-size 80] [--epochs 30]

Appends a record to results/misclassified.jsonl: test accuracy, fit time, and each wrong
image with its label, the prediction and the predicted class's probability; and the same for
the fitted model's predictions averaged over the test image's eight flips and quarter turns
(test-time augmentation), which costs no training.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "include"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "rice")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--probabilities", type=Path, default=None,
                        help="also save the test images' probabilities here (.npy), to score "
                             "an ensemble of recipes afterwards")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf
    from results_log import record

    from rice_mlops.compute.data import validate
    from rice_mlops.compute.data.pipeline import eval_batches
    from rice_mlops.compute.recipe import compiled_recipe, quiet_tensorflow
    from rice_mlops.compute.training_config import TrainConfig

    overrides = {k: v for k, v in (("image_size", args.image_size), ("epochs", args.epochs))
                 if v is not None}
    config = TrainConfig(data_dir=args.data.resolve(), **overrides)
    quiet_tensorflow()
    dataset = validate(config.data_dir, min_per_class=config.min_per_class)
    classes = dataset.classes
    recipe = compiled_recipe(config, dataset)
    model, splits, train_ds, val_ds = recipe.model, recipe.splits, recipe.train, recipe.val
    if args.label_smoothing:
        # Keras' sparse loss has no smoothing: one-hot labels and the categorical loss.
        def one_hot(images, labels):
            return images, tf.one_hot(labels, len(classes))
        train_ds, val_ds = train_ds.map(one_hot), val_ds.map(one_hot)
        model.compile(optimizer=model.optimizer, metrics=["accuracy"],
                      loss=keras.losses.CategoricalCrossentropy(
                          label_smoothing=args.label_smoothing))
    started = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, verbose=0).history
    fit_seconds = time.perf_counter() - started
    paths, labels = dataset.examples("test")
    probabilities = model.predict(eval_batches(splits["test"], 256), verbose=0)

    def mistakes(probabilities):
        predicted = probabilities.argmax(axis=1)
        return [{"image": str(Path(paths[i]).relative_to(dataset.root)),
                 "label": classes[labels[i]], "predicted": classes[predicted[i]],
                 "probability": round(float(probabilities[i].max()), 4)}
                for i in np.flatnonzero(predicted != np.asarray(labels))]

    wrong = mistakes(probabilities)
    if args.probabilities:
        np.save(args.probabilities, probabilities)
    views = [lambda x: x, lambda x: tf.image.flip_left_right(x)]
    views = [lambda x, v=v, k=k: tf.image.rot90(v(x), k) for v in views for k in range(4)]
    averaged = np.mean([model.predict(eval_batches(splits["test"], 256).map(
        lambda x, y, view=view: (view(x), y)), verbose=0) for view in views], axis=0)
    wrong_tta = mistakes(averaged)
    record("misclassified", {
        "data": str(args.data), "label_smoothing": args.label_smoothing, **overrides,
        "test_images": len(labels), "test_accuracy": round(1 - len(wrong) / len(labels), 4),
        "val_accuracy": round(float(history["val_accuracy"][-1]), 4),
        "fit_seconds": round(fit_seconds, 1), "wrong": wrong,
        "tta8_test_accuracy": round(1 - len(wrong_tta) / len(labels), 4),
        "tta8_wrong": wrong_tta,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
