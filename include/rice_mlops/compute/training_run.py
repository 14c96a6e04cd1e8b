"""Train, evaluate, export and log one model run to MLflow; the hand-off is the run id."""

from __future__ import annotations

import csv
import json
import logging
import socket
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from rice_mlops.compute.data import Dataset, validate
from rice_mlops.compute.dataset_record import image_dataset
from rice_mlops.compute.export import PARITY_TOLERANCE, TFLiteParityError, export_tflite, parity
from rice_mlops.compute.metrics import (
    evaluate,
    flat_metrics,
    plot_confusion_matrix,
    plot_training_curves,
)
from rice_mlops.compute.recipe import (
    compiled_recipe,
    epoch_logger,
    quiet_tensorflow,
    split_counts,
)
from rice_mlops.compute.run_seal import digests, manifest_matches, reusable_result, seal
from rice_mlops.compute.training_config import TrainConfig
from rice_mlops.core.fingerprint import fingerprint
from rice_mlops.core.vocabulary import (
    CODE_DIGEST_TAG,
    COMPLETE_TAG,
    FINGERPRINT_TAG,
    RESULT_ARTIFACT,
    SOURCE_TAGS,
    TRAIN_HOST_TAG,
)

log = logging.getLogger(__name__)

PARITY_SAMPLE = 40  # raw test images checked through TFLite; a few seconds of invokes


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


def _checked_dataset(config: TrainConfig, validated: tuple[Dataset, str] | None
                     ) -> tuple[Dataset, str]:
    """The dataset and its fingerprint: as an earlier step checked them, or checked here."""
    if validated is not None:
        return validated
    dataset = validate(config.data_dir, min_per_class=config.min_per_class)
    return dataset, fingerprint(dataset)


def _record_inputs(mlflow, config: TrainConfig, dataset: Dataset, counts: dict,
                   data_fingerprint: str, code_digest: str) -> None:
    """What the run was trained from: source, data and code as tags, params, split sizes."""
    mlflow.set_tags({SOURCE_TAGS[k]: v for k, v in config.source.items()
                     if k in SOURCE_TAGS and v})
    mlflow.set_tag(FINGERPRINT_TAG, data_fingerprint)
    mlflow.set_tag(CODE_DIGEST_TAG, code_digest)
    mlflow.set_tag(TRAIN_HOST_TAG, socket.gethostname())
    mlflow.log_params(_run_params(config, dataset.classes, dataset.layout))
    mlflow.log_metrics({f"n_{split}": n for split, n in counts.items()})
    mlflow.log_input(image_dataset(dataset.root, data_fingerprint, counts), context="training",
                     tags={FINGERPRINT_TAG: data_fingerprint})


def _evaluate_and_export(mlflow, model, dataset: Dataset, test_split, history: dict,
                         train_seconds: float) -> tuple[dict, dict]:
    """Score the test split, export TFLite and check it against Keras, log metrics and
    artifacts: the evaluation and the metrics. A TFLite file that disagrees is refused."""
    from rice_mlops.compute.data.pipeline import eval_batches

    classes = dataset.classes
    test_paths, test_labels = dataset.examples("test")
    probabilities = model.predict(eval_batches(test_split, 256), verbose=0)
    evaluation = evaluate(test_labels, probabilities, classes)
    metrics = {**flat_metrics(evaluation), "val_accuracy": float(history["val_accuracy"][-1]),
               "train_seconds": train_seconds}
    with tempfile.TemporaryDirectory(prefix="rice-run-") as work:
        tflite_dir = Path(work) / "tflite"
        tflite_dir.mkdir()
        tflite_path = export_tflite(model, tflite_dir / "model.tflite")
        metrics["tflite_max_abs_diff"] = parity(model, tflite_path,
                                                _raw_images(test_paths, PARITY_SAMPLE))
        mlflow.log_metrics(metrics)
        predictions = _predictions_csv(Path(work) / "predictions.csv", dataset.root,
                                       test_paths, test_labels, probabilities, classes)
        _log_artifacts(mlflow, evaluation, history, classes, tflite_dir, predictions)
    if metrics["tflite_max_abs_diff"] > PARITY_TOLERANCE:
        raise TFLiteParityError(
            f"TFLite export differs from Keras by {metrics['tflite_max_abs_diff']:.2e} "
            f"(tolerance {PARITY_TOLERANCE:.0e}); the export is not servable")
    return evaluation, metrics


def _log_model(mlflow, model, dataset: Dataset, image_size: int):
    """The Keras model with its raw-pixel signature and an input example: the model info."""
    import tensorflow as tf

    example = np.asarray(_raw_images(dataset.examples("test")[0], 1), dtype=np.float32)
    example = tf.image.resize(example, (image_size, image_size)).numpy()
    # mlflow.keras.log_model loses the input example (3.17.2 writes it before creating
    # the model directory); the tensorflow flavor saves the same data/model.keras.
    # The requirements are named, not inferred: MLflow would otherwise load the model again
    # in a fresh interpreter (TensorFlow imported anew) to see what it imports.
    return mlflow.tensorflow.log_model(model, name="model",
                                       signature=_signature(len(dataset.classes)),
                                       input_example=example,
                                       pip_requirements=model_requirements())

# What MLflow's inference wrote for this model (tensorflow-cpu provides the `tensorflow`
# module; the `tensorflow` name is what a loader's environment resolves).
MODEL_REQUIREMENTS = ("mlflow", "cloudpickle", "numpy", "tensorflow-cpu")


def model_requirements() -> list[str]:
    """The logged model's pip requirements, pinned to the versions that trained it."""
    from importlib.metadata import version

    pins = [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]
    return [*pins, f"tensorflow=={version('tensorflow-cpu')}"]


def train(config: TrainConfig, output_json: Path | None = None, *,
          validated: tuple[Dataset, str] | None = None) -> dict:
    """Train on `config.data_dir`, log everything to the active MLflow tracking server.

    Returns (and optionally writes to `output_json`) the run's contract document.
    Raises DataValidationError before any training when the dataset is unusable. `validated`
    is the dataset and fingerprint an earlier step already checked (the DAG's validate_data),
    so they are not computed twice.
    """
    quiet_tensorflow()
    dataset, data_fingerprint = _checked_dataset(config, validated)
    from rice_mlops.compute.code_digest import training_code_digest

    code_digest = training_code_digest(config.model_params())
    classes = dataset.classes
    counts = split_counts(dataset)
    log.info("dataset %s: %s layout, %s, classes %s, fingerprint %s",
             dataset.root, dataset.layout, counts, classes, data_fingerprint)

    import mlflow

    recipe = compiled_recipe(config, dataset)
    model = recipe.model
    mlflow.set_experiment(config.experiment)
    # Autolog brings fit params and per-epoch metrics; the model is logged once, by
    # _log_model, with the raw-pixel signature and the TFLite export beside it.
    mlflow.keras.autolog(log_models=False, log_datasets=False, silent=True)
    try:
        with mlflow.start_run() as run:
            _record_inputs(mlflow, config, dataset, counts, data_fingerprint, code_digest)
            history, train_seconds = recipe.fit(config.epochs, [epoch_logger(config.epochs)])
            evaluation, metrics = _evaluate_and_export(mlflow, model, dataset,
                                                       recipe.splits["test"],
                                                       history, train_seconds)
            model_info = _log_model(mlflow, model, dataset, config.image_size)
            result = seal(mlflow, {
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
            })
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
                why, manifest = manifest_matches(run.info.run_id)
            if why:
                log.warning("not reusing run %s for DAG run %s: %s", run.info.run_id,
                            dag_run_id, why)
                continue
            log.info("run %s already completed for DAG run %s; reusing it",
                     run.info.run_id, dag_run_id)
            result = {**result, "artifact_sha256": digests(manifest)}
            _write_json(result, output_json)
            return result
        for run in runs:
            log.warning("deleting incomplete run %s (%s) left by an earlier attempt",
                        run.info.run_id, run.info.status)
            client.delete_run(run.info.run_id)
    source = {**config.source, "airflow_dag_run_id": dag_run_id}
    return train(replace(config, source=source), output_json, validated=validated)
