"""Training on real rice images against a real MLflow server: what is logged, and the contract."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOURCE = {"commit": "0123456789abcdef0123456789abcdef01234567", "ref": "refs/heads/main",
          "repository": "acme/rice"}


@pytest.fixture(scope="module")
def trained(tiny_real_dataset, mlflow_server, tmp_path_factory):
    from rice_mlops.compute.training_config import TrainConfig
    from rice_mlops.compute.training_run import train

    out = tmp_path_factory.mktemp("train") / "result.json"
    config = TrainConfig(data_dir=tiny_real_dataset, epochs=2, image_size=64, batch_size=32,
                         seed=7, experiment="it-training", source=SOURCE)
    result = train(config, output_json=out)
    return config, result, json.loads(out.read_text())


def test_output_json_contract(trained):
    _, result, written = trained
    assert written == json.loads(json.dumps(result))
    for key in ("run_id", "model_uri", "image_size", "dataset_fingerprint", "epochs_run",
                "train_seconds"):
        assert key in written
    for key in ("val_accuracy", "test_accuracy", "test_macro_f1"):
        assert 0.0 <= written["metrics"][key] <= 1.0
    assert written["image_size"] == 64
    assert written["epochs_run"] == 2
    assert written["model_uri"].startswith("models:/")
    assert written["dataset_fingerprint"].startswith("sha256:")


def test_params_metrics_and_tags_are_logged(trained):
    from mlflow import MlflowClient

    config, result, _ = trained
    client = MlflowClient()
    run = client.get_run(result["run_id"])
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["epochs"] == "2"  # from autolog's fit parameters
    assert params["image_size"] == "64" and params["seed"] == "7"
    assert params["train_batch_size"] == "32"
    assert params["classes"] == "Arborio,Basmati,Ipsala,Jasmine,Karacadag"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 2  # per epoch
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) >= 2
    assert metrics["test_accuracy"] == pytest.approx(result["metrics"]["test_accuracy"])
    # The run's Datasets panel: the images by name, fingerprint, source and split sizes.
    [logged] = run.inputs.dataset_inputs
    fingerprint = result["dataset_fingerprint"]
    assert logged.dataset.name == "rice-images"
    assert logged.dataset.digest == fingerprint.removeprefix("sha256:")[:16]
    assert json.loads(logged.dataset.source)["uri"] == str(config.data_dir)
    profile = json.loads(logged.dataset.profile)
    assert profile["images"] == sum(int(metrics[f"n_{s}"]) for s in ("train", "val", "test"))
    assert profile["test_images"] == int(metrics["n_test"])
    input_tags = {tag.key: tag.value for tag in logged.tags}
    assert input_tags["mlflow.data.context"] == "training"
    assert input_tags["rice.dataset_fingerprint"] == fingerprint
    for cls in ("Arborio", "Karacadag"):
        assert 0 <= metrics[f"test_recall_{cls}"] <= 1
        assert 0 <= metrics[f"test_precision_{cls}"] <= 1
    assert metrics["n_train"] == 200 and metrics["n_test"] == 40
    assert metrics["tflite_max_abs_diff"] <= 1e-4
    assert tags["rice.source_commit"] == SOURCE["commit"]
    assert tags["rice.source_repository"] == SOURCE["repository"]
    assert tags["rice.dataset_fingerprint"] == result["dataset_fingerprint"]
    assert tags["rice.train_host"] == socket.gethostname()
    assert run.info.status == "FINISHED"


def test_artifacts_plots_tflite_and_model_files(trained, tmp_path):
    import mlflow
    from PIL import Image

    _, result, _ = trained
    run_dir = Path(mlflow.artifacts.download_artifacts(run_id=result["run_id"], dst_path=tmp_path))
    for png in ("plots/confusion_matrix.png", "plots/training_curves.png"):
        with Image.open(run_dir / png) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert (run_dir / "tflite" / "model.tflite").stat().st_size > 10_000
    assert json.loads((run_dir / "model_meta" / "labels.json").read_text())["classes"] == \
        result["classes"]
    evaluation = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(result["metrics"]["test_accuracy"])
    assert np.asarray(evaluation["confusion_matrix"]).sum() == 40

    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=result["model_uri"],
                                                         dst_path=tmp_path / "model"))
    for name in ("MLmodel", "requirements.txt", "python_env.yaml", "input_example.json"):
        assert (model_dir / name).is_file(), name
    assert list(model_dir.rglob("*.keras"))
    # Named, not inferred (rice_mlops.compute.training_run.model_requirements): what loads the
    # model in
    # another environment installs the versions that trained it.
    from importlib.metadata import version

    requirements = (model_dir / "requirements.txt").read_text().split()
    for name in ("mlflow", "numpy", "tensorflow-cpu", "cloudpickle"):
        assert f"{name}=={version(name)}" in requirements, requirements


def test_model_uri_reproduces_the_training_probabilities(trained, tiny_real_dataset, tmp_path):
    import mlflow
    import tensorflow as tf
    from PIL import Image

    _, result, _ = trained
    predictions = Path(mlflow.artifacts.download_artifacts(
        run_id=result["run_id"], artifact_path="evaluation/predictions.csv", dst_path=tmp_path))
    with predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40
    pixels = np.stack([np.asarray(Image.open(tiny_real_dataset / r["path"]).convert("RGB"),
                                  dtype=np.float32) for r in rows])
    resized = tf.image.resize(pixels, (64, 64)).numpy().astype(np.float32)
    model = mlflow.pyfunc.load_model(result["model_uri"])
    predicted = np.asarray(model.predict(resized))
    expected = np.array([[float(r[c]) for c in result["classes"]] for r in rows])
    assert predicted.shape == (40, 5)
    assert np.abs(predicted - expected).max() < 1e-5
    # The same model also takes the dataset's native 250x250 images: resizing is inside it.
    native = np.asarray(model.predict(pixels[:4]))
    assert np.abs(native - expected[:4]).max() < 1e-5


def test_same_seed_gives_the_same_metrics(trained, tiny_real_dataset):
    from rice_mlops.compute.training_run import train

    config, result, _ = trained
    again = train(config)
    assert again["run_id"] != result["run_id"]
    for key, value in result["metrics"].items():
        if key != "tflite_max_abs_diff":
            assert again["metrics"][key] == pytest.approx(value, abs=1e-6), key


def test_invalid_dataset_fails_before_any_run(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    from rice_mlops.compute.data import DataValidationError
    from rice_mlops.compute.training_config import TrainConfig
    from rice_mlops.compute.training_run import train

    (tmp_path / "train" / "Arborio").mkdir(parents=True)
    (tmp_path / "train" / "Arborio" / "a.jpg").write_bytes(b"broken")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("it-invalid")
    before = len(client.search_runs([experiment.experiment_id])) if experiment else 0
    with pytest.raises(DataValidationError, match="a.jpg"):
        train(TrainConfig(data_dir=tmp_path, epochs=1, experiment="it-invalid"))
    experiment = client.get_experiment_by_name("it-invalid")
    after = len(client.search_runs([experiment.experiment_id])) if experiment else 0
    assert after == before
