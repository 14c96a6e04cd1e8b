"""Train, evaluate, export and log one model run to MLflow; the hand-off is the run id."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from rice_mlops.config import TrainConfig
from rice_mlops.data import Dataset, validate
from rice_mlops.data.fingerprint import file_sha256, fingerprint
from rice_mlops.evaluation import (
    evaluate,
    flat_metrics,
    plot_confusion_matrix,
    plot_training_curves,
)
from rice_mlops.run_policy import RUN_ID
from rice_mlops.tflite_export import PARITY_TOLERANCE, TFLiteParityError, export_tflite, parity
from rice_mlops.vocabulary import (
    CODE_DIGEST_TAG,
    COMPLETE_TAG,
    FINGERPRINT_TAG,
    RESULT_ARTIFACT,
    RUN_MANIFEST_ARTIFACT,
    SOURCE_TAGS,
    TFLITE_ARTIFACT,
)

log = logging.getLogger(__name__)

# The files a reused run must still hold, unchanged: listed with their sha256 in
# RUN_MANIFEST_ARTIFACT, written after them and before the completion tag.
MANIFESTED_ARTIFACTS = (TFLITE_ARTIFACT, "model_meta/labels.json", "evaluation/metrics.json",
                        RESULT_ARTIFACT)
_MODEL_URI = re.compile(r"models:/m-[0-9a-f]{32}")
PARITY_SAMPLE = 40  # raw test images checked through TFLite; a few seconds of invokes


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _epoch_logger(total_epochs: int):
    import keras

    class EpochLogger(keras.callbacks.Callback):
        """One readable line per epoch instead of a progress bar (logs are read in the UI)."""

        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            values = "  ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()))
            seconds = time.perf_counter() - self._started
            log.info("epoch %d/%d  %s  (%.1fs)", epoch + 1, total_epochs, values, seconds)

    return EpochLogger()


def _raw_images(paths: list[Path], limit: int) -> np.ndarray:
    """Native-size float32 pixels of up to `limit` evenly spread files (same size required)."""
    chosen = paths[:: max(1, len(paths) // limit)][:limit]
    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in chosen]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:  # mixed sizes cannot be stacked; compare at the most common size
        common = max(shapes, key=[a.shape for a in arrays].count)
        arrays = [a for a in arrays if a.shape == common]
    return np.stack(arrays)


def _signature(num_classes: int):
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )


def _run_params(config: TrainConfig, classes: list[str], layout: str) -> dict:
    # Autolog logs fit()'s own arguments; `epochs` comes from there, and its `batch_size` is
    # None for a tf.data input, so ours goes under another key (MLflow refuses changed params).
    params = config.params()
    params.pop("epochs")
    params["train_batch_size"] = params.pop("batch_size")
    return {**params, "classes": ",".join(classes), "dataset_layout": layout}


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


def _predictions_csv(path: Path, root: Path, paths: list[Path], labels: list[int],
                     probabilities: np.ndarray, classes: list[str]) -> Path:
    """One row per test image: what a reviewer needs to look at the mistakes."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "predicted", *classes])
        for file, label, probs in zip(paths, labels, probabilities, strict=True):
            writer.writerow([file.relative_to(root).as_posix(), classes[label],
                             classes[int(np.argmax(probs))], *(f"{p:.9g}" for p in probs)])
    return path


def _log_artifacts(mlflow, evaluation: dict, history: dict, classes: list[str], tflite_dir: Path,
                   predictions: Path):
    with tempfile.TemporaryDirectory(prefix="rice-artifacts-") as tmp:
        tmp_path = Path(tmp)
        plot_confusion_matrix(evaluation, tmp_path / "confusion_matrix.png")
        plot_training_curves(history, tmp_path / "training_curves.png")
        mlflow.log_artifacts(tmp, artifact_path="plots")
    mlflow.log_artifact(str(predictions), artifact_path="evaluation")
    mlflow.log_dict(evaluation, "evaluation/metrics.json")
    mlflow.log_dict({"classes": classes}, "model_meta/labels.json")
    mlflow.log_artifacts(str(tflite_dir), artifact_path="tflite")


def train(config: TrainConfig, output_json: Path | None = None, *,
          validated: tuple[Dataset, str] | None = None) -> dict:
    """Train on `config.data_dir`, log everything to the active MLflow tracking server.

    Returns (and optionally writes to `output_json`) the run's contract document.
    Raises DataValidationError before any training when the dataset is unusable. `validated`
    is the dataset and fingerprint an earlier step already checked (the DAG's validate_data),
    so they are not computed twice.
    """
    _quiet_tensorflow()
    if validated is None:
        dataset = validate(config.data_dir, min_per_class=config.min_per_class)
        data_fingerprint = fingerprint(dataset)
    else:
        dataset, data_fingerprint = validated
    from rice_mlops.code_digest import training_code_digest

    code_digest = training_code_digest(config.model_params())
    classes = dataset.classes
    counts = {split: sum(by_class.values()) for split, by_class in dataset.counts().items()}
    log.info("dataset %s: %s layout, %s, classes %s, fingerprint %s",
             dataset.root, dataset.layout, counts, classes, data_fingerprint)

    import keras
    import mlflow
    import tensorflow as tf

    from rice_mlops.data.pipeline import cached_split, eval_batches, training_batches
    from rice_mlops.model import build_model

    keras.config.disable_interactive_logging()  # no progress bars in task logs
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    splits = {s: cached_split(*dataset.examples(s), config.image_size) for s in counts}
    train_ds = training_batches(splits["train"], config.batch_size, config.seed, config.augment)
    val_ds = eval_batches(splits["val"], 256)
    steps_per_epoch = -(-counts["train"] // config.batch_size)

    model = build_model(len(classes), config.image_size, config.architecture)
    _compile(model, config, steps_per_epoch)

    mlflow.set_experiment(config.experiment)
    # Autolog brings fit params and per-epoch metrics; the model is logged below, once, with
    # the raw-pixel signature and the TFLite export beside it.
    mlflow.keras.autolog(log_models=False, log_datasets=False, silent=True)
    try:
        with mlflow.start_run() as run:
            mlflow.set_tags({SOURCE_TAGS[k]: v for k, v in config.source.items()
                             if k in SOURCE_TAGS and v})
            mlflow.set_tag(FINGERPRINT_TAG, data_fingerprint)
            mlflow.set_tag(CODE_DIGEST_TAG, code_digest)
            mlflow.log_params(_run_params(config, classes, dataset.layout))
            mlflow.log_metrics({f"n_{split}": n for split, n in counts.items()})

            started = time.perf_counter()
            history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs,
                                verbose=0, callbacks=[_epoch_logger(config.epochs)]).history
            train_seconds = time.perf_counter() - started

            test_paths, test_labels = dataset.examples("test")
            probabilities = model.predict(eval_batches(splits["test"], 256), verbose=0)
            evaluation = evaluate(test_labels, probabilities, classes)
            metrics = {
                **flat_metrics(evaluation),
                "val_accuracy": float(history["val_accuracy"][-1]),
                "train_seconds": train_seconds,
            }

            with tempfile.TemporaryDirectory(prefix="rice-run-") as work:
                tflite_dir = Path(work) / "tflite"
                tflite_dir.mkdir()
                tflite_path = export_tflite(model, tflite_dir / "model.tflite")
                metrics["tflite_max_abs_diff"] = parity(
                    model, tflite_path, _raw_images(test_paths, PARITY_SAMPLE)
                )
                mlflow.log_metrics(metrics)
                predictions = _predictions_csv(Path(work) / "predictions.csv", dataset.root,
                                               test_paths, test_labels, probabilities, classes)
                _log_artifacts(mlflow, evaluation, history, classes, tflite_dir, predictions)
            if metrics["tflite_max_abs_diff"] > PARITY_TOLERANCE:
                raise TFLiteParityError(
                    f"TFLite export differs from Keras by {metrics['tflite_max_abs_diff']:.2e} "
                    f"(tolerance {PARITY_TOLERANCE:.0e}); the export is not servable"
                )

            example = np.asarray(_raw_images(test_paths, 1), dtype=np.float32)
            example = tf.image.resize(example, (config.image_size, config.image_size)).numpy()
            # mlflow.keras.log_model loses the input example (3.17.2 writes it before creating
            # the model directory); the tensorflow flavor saves the same data/model.keras.
            model_info = mlflow.tensorflow.log_model(
                model, name="model", signature=_signature(len(classes)), input_example=example
            )
            result = {
                "run_id": run.info.run_id,
                "experiment_id": run.info.experiment_id,
                "model_uri": model_info.model_uri,
                "model_id": model_info.model_id,
                "tracking_uri": mlflow.get_tracking_uri(),
                "image_size": config.image_size,
                "classes": classes,
                "metrics": {key: metrics[key] for key in
                            ("val_accuracy", "test_accuracy", "test_macro_f1",
                             "tflite_max_abs_diff")},
                "evaluation": evaluation,
                "dataset_fingerprint": data_fingerprint,
                "code_digest": code_digest,
                "counts": counts,
                "epochs_run": len(history["loss"]),
                "train_seconds": train_seconds,
            }
            # Written last: a run with this tag is complete and can be reused by a retry.
            mlflow.log_dict(result, RESULT_ARTIFACT)
            manifest = _artifact_manifest(run.info.run_id)
            mlflow.log_text(manifest, RUN_MANIFEST_ARTIFACT)
            mlflow.set_tag(COMPLETE_TAG, "true")
            # Not in result.json (the manifest covers it): the digests the release zone checks
            # the model bytes against, recorded by the task that trained them.
            result = {**result, "artifact_sha256": _digests(manifest)}
    finally:
        mlflow.keras.autolog(disable=True)

    log.info("run %s: test accuracy %.4f, macro F1 %.4f, trained in %.1fs",
             result["run_id"], metrics["test_accuracy"], metrics["test_macro_f1"], train_seconds)
    _write_json(result, output_json)
    return result


def _write_json(result: dict, output_json: Path | None) -> None:
    if output_json:
        Path(output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(output_json).write_text(json.dumps(result, indent=2) + "\n")


def _artifact_manifest(run_id: str) -> str:
    """`sha256sum` lines over the run's manifested artifacts, as the server stores them."""
    import mlflow

    lines = []
    with tempfile.TemporaryDirectory(prefix="rice-manifest-") as scratch:
        for artifact in MANIFESTED_ARTIFACTS:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                        dst_path=scratch)
            lines.append(f"{file_sha256(Path(local))}  {artifact}\n")
    return "".join(lines)


def _digests(manifest: str) -> dict[str, str]:
    from rice_mlops.release import manifest_digests

    return manifest_digests(manifest)


def reusable_result(run, result: dict) -> str | None:
    """Why a complete-looking run must not be reused (None: it may). The run and its result
    come from MLflow, which anyone who reaches it can write: check ids and shapes."""
    run_id = run.info.run_id
    if not RUN_ID.fullmatch(run_id or ""):
        return f"run id {run_id!r} is not 32 hex characters"
    if result.get("run_id") != run_id:
        return f"its result names run {result.get('run_id')!r}, not itself"
    if not _MODEL_URI.fullmatch(str(result.get("model_uri"))):
        return f"its model URI {result.get('model_uri')!r} is not models:/m-<32 hex>"
    metrics = result.get("metrics") or {}
    for key in ("test_accuracy", "val_accuracy", "test_macro_f1"):
        value = metrics.get(key)
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            return f"metric {key} is {value!r}, not a number in [0, 1]"
    return None


def _manifest_matches(run_id: str) -> tuple[str | None, str]:
    """(None, the manifest) when the run's artifacts match the manifest it logged; else
    (what differs, "")."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        recorded = mlflow.artifacts.load_text(f"runs:/{run_id}/{RUN_MANIFEST_ARTIFACT}")
        actual = _artifact_manifest(run_id)
    except (MlflowException, OSError) as exc:
        return f"its artifacts cannot be read ({exc})", ""
    if recorded != actual:
        return "its artifacts no longer match their manifest", ""
    return None, recorded


def train_once(config: TrainConfig, dag_run_id: str, output_json: Path | None = None, *,
               validated: tuple[Dataset, str] | None = None) -> dict:
    """`train`, at most one complete MLflow run per Airflow DAG run, whatever the retries.

    A retry after a complete run returns that run's result without training again; runs that an
    earlier attempt left incomplete (crashed, or cut off from the server) are deleted first, so
    the experiment never shows two runs for one DAG run.
    """
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is not None:
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{SOURCE_TAGS['airflow_dag_run_id']}` = '{dag_run_id}'",
        )
        for run in runs:
            if run.data.tags.get(COMPLETE_TAG) != "true":
                continue
            result = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{RESULT_ARTIFACT}")
            why, manifest = reusable_result(run, result), ""
            if why is None:
                why, manifest = _manifest_matches(run.info.run_id)
            if why:
                log.warning("not reusing run %s for DAG run %s: %s", run.info.run_id,
                            dag_run_id, why)
                continue
            log.info("run %s already completed for DAG run %s; reusing it",
                     run.info.run_id, dag_run_id)
            result = {**result, "artifact_sha256": _digests(manifest)}
            _write_json(result, output_json)
            return result
        for run in runs:
            log.warning("deleting incomplete run %s (%s) left by an earlier attempt",
                        run.info.run_id, run.info.status)
            client.delete_run(run.info.run_id)
    source = {**config.source, "airflow_dag_run_id": dag_run_id}
    return train(replace(config, source=source), output_json, validated=validated)
