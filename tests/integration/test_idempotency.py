"""Retries of the training and registration steps never duplicate MLflow runs or versions."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_train_once_discards_an_incomplete_attempt_and_reuses_a_complete_run(
        tiny_real_dataset, mlflow_server):
    import mlflow
    from mlflow import MlflowClient

    from rice_mlops.compute.training_config import TrainConfig
    from rice_mlops.compute.training_run import train_once
    from rice_mlops.core import model_registry as registry

    experiment = "it-once"
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as crashed:  # what an attempt killed mid-training leaves behind
        mlflow.set_tag("rice.airflow_dag_run_id", "dag-run-1")
    MlflowClient().set_terminated(crashed.info.run_id, status="FAILED")

    config = TrainConfig(data_dir=tiny_real_dataset, epochs=1, batch_size=32,
                         experiment=experiment)
    first = train_once(config, "dag-run-1")
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    query = "tags.`rice.airflow_dag_run_id` = 'dag-run-1'"
    runs = client.search_runs([experiment_id], filter_string=query)
    assert [r.info.run_id for r in runs] == [first["run_id"]]
    assert client.get_run(crashed.info.run_id).info.lifecycle_stage == "deleted"

    again = train_once(config, "dag-run-1")
    assert again == first
    assert len(client.search_runs([experiment_id], filter_string=query)) == 1

    name = "it-once-model"
    version = registry.register(first["run_id"], first["model_uri"], name=name)
    assert registry.register(first["run_id"], first["model_uri"], name=name) == version
    assert len(client.search_model_versions(f"name='{name}'")) == 1
