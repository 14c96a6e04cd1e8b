"""Fetching a run's artifacts from the real MLflow artifact store into staging."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(tiny_real_dataset, mlflow_server):
    from rice_mlops.compute.training_config import TrainConfig
    from rice_mlops.compute.training_run import train

    return train(TrainConfig(data_dir=tiny_real_dataset, epochs=1, batch_size=32,
                             experiment="it-artifacts"))


def test_fetch_stages_model_tflite_labels_metrics_plot_and_manifest(run, tmp_path):
    import mlflow

    from rice_mlops.core.staged_artifacts import fetch, verify_manifest

    staged = fetch(run["run_id"], run["model_uri"], tmp_path)
    assert staged == tmp_path / run["run_id"] / "model_artifact"
    files = verify_manifest(staged)
    for name in ("MLmodel", "requirements.txt", "python_env.yaml", "model.tflite",
                 "labels.json", "metrics.json", "confusion_matrix.png"):
        assert name in files, name
    assert any(name.endswith(".keras") for name in files)
    metrics = json.loads((staged / "metrics.json").read_text())
    assert metrics["run_id"] == run["run_id"]
    assert metrics["test_accuracy"] == pytest.approx(run["metrics"]["test_accuracy"])
    assert set(metrics["per_class"]) == set(run["classes"])
    # The staged directory is itself a loadable MLflow model.
    model = mlflow.pyfunc.load_model(str(staged))
    assert model.metadata.signature is not None
    assert not [p for p in (tmp_path / run["run_id"]).iterdir() if ".partial-" in p.name]


def test_fetch_is_idempotent_and_repairs_a_damaged_stage(run, tmp_path):
    from rice_mlops.core.staged_artifacts import fetch, verify_manifest

    first = fetch(run["run_id"], run["model_uri"], tmp_path)
    stamp = (first / "MLmodel").stat().st_mtime_ns
    assert fetch(run["run_id"], run["model_uri"], tmp_path) == first
    assert (first / "MLmodel").stat().st_mtime_ns == stamp  # nothing downloaded again

    (first / "labels.json").write_text("damaged")
    again = fetch(run["run_id"], run["model_uri"], tmp_path)
    verify_manifest(again)
    assert json.loads((again / "labels.json").read_text())["classes"] == run["classes"]


def test_interrupted_download_never_counts_as_done(run, tmp_path, monkeypatch):
    from rice_mlops.core import staged_artifacts as artifacts

    def broken(run_id, model_uri, target):
        (target / "MLmodel").write_text("half")
        raise ConnectionError("artifact store went away")

    monkeypatch.setattr(artifacts, "_download", broken)
    with pytest.raises(ConnectionError):
        artifacts.fetch(run["run_id"], run["model_uri"], tmp_path)
    # Nothing of the attempt stays: not the partial download, not the run's empty directory.
    assert not (tmp_path / run["run_id"]).exists()
