"""The training recipe, in one public place: seeded Keras, the cached and augmented batches, the
model and its optimiser schedule, ready to fit.

`training_run.train` wraps it in an MLflow run and the benchmarks (`benchmarks/epoch_speed.py`,
`benchmarks/misclassified.py`) call it as it is, so a recipe measured there is the recipe the
pipeline trains. Heavy imports (Keras, TensorFlow) happen inside the functions.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rice_mlops.compute.training_config import TrainConfig
from rice_mlops.core.dataset_layout import Dataset

log = logging.getLogger(__name__)

EVAL_BATCH = 256  # validation and test batches: inference only, so larger than training's


def quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def split_counts(dataset: Dataset) -> dict[str, int]:
    return {split: sum(by_class.values()) for split, by_class in dataset.counts().items()}


@dataclass
class Recipe:
    """A compiled model and the batches it is fitted on; `splits` are decoded once and cached
    (the test split too, for evaluation after the fit)."""

    model: Any
    splits: dict[str, Any]
    train: Any
    val: Any
    counts: dict[str, int]

    def fit(self, epochs: int, callbacks: Sequence = ()) -> tuple[dict, float]:
        """Fit for `epochs`: the history and the seconds it took."""
        started = time.perf_counter()
        history = self.model.fit(self.train, validation_data=self.val, epochs=epochs,
                                 verbose=0, callbacks=list(callbacks)).history
        return history, time.perf_counter() - started


def compiled_recipe(config: TrainConfig, dataset: Dataset, *,
                    deterministic: bool = True) -> Recipe:
    """The model of `config` compiled with its schedule, and its batches, from a checked
    dataset. `deterministic` (the default, what the pipeline trains) makes the same seed give
    the same weights; benchmarks may turn it off to measure its cost."""
    import keras
    import tensorflow as tf

    from rice_mlops.compute.data.pipeline import cached_split, eval_batches, training_batches
    from rice_mlops.compute.model import build_model

    keras.config.disable_interactive_logging()  # no progress bars in task logs
    keras.utils.set_random_seed(config.seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    counts = split_counts(dataset)
    splits = {s: cached_split(*dataset.examples(s), config.image_size) for s in counts}
    train = training_batches(splits["train"], config.batch_size, config.seed, config.augment)
    model = build_model(len(dataset.classes), config.image_size, config.architecture)
    _compile(model, config, steps_per_epoch=-(-counts["train"] // config.batch_size))
    return Recipe(model=model, splits=splits, train=train,
                  val=eval_batches(splits["val"], EVAL_BATCH), counts=counts)


def _compile(model, config: TrainConfig, steps_per_epoch: int) -> None:
    import keras

    total = steps_per_epoch * config.epochs
    # Short warm-up, then cosine decay: a high peak rate trains the batch-normed net fast,
    # and the low final rate settles the weights that get evaluated and shipped.
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate * 0.1,
        decay_steps=total,
        warmup_target=config.learning_rate,
        warmup_steps=max(1, total // 10),
        alpha=0.01,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def epoch_logger(total_epochs: int):
    """A Keras callback writing one readable line per epoch (logs are read in the UI)."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            values = "  ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()))
            seconds = time.perf_counter() - self._started
            log.info("epoch %d/%d  %s  (%.1fs)", epoch + 1, total_epochs, values, seconds)

    return EpochLogger()
