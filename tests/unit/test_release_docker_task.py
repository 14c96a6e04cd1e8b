"""The release zone's Docker task (issues 20 and 35): prepare_image_context as the Docker
worker runs it, engine, wheels and MLflow stubbed, on a staged run directory another zone
could have written. It builds in the release directory, later release tasks act only for
the run it measured, and it fails closed on bytes training did not record or a model
below the bar."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from rice_mlops.release import image as image_module
from tests.helpers import handoffs
from tests.helpers.release_context import no_wheels


@pytest.fixture
def release_task(trained_dir, digests, dataset, signing_key, tmp_path, monkeypatch):
    """The release stage's prepare_image_context, engine, wheels and MLflow stubbed: the glue
    the Docker worker runs, on a staged run directory another zone could have written."""
    from rice_mlops.core import model_registry as registry
    from rice_mlops.core.run_policy import param_schemas
    from rice_mlops.core.settings import PipelineSettings
    from rice_mlops.release.signing import load_private_key
    from rice_mlops.stages import release

    run_id = "ab" * 16
    staging, socket = tmp_path / "staging", tmp_path / "docker.sock"
    socket.touch()
    shutil.copytree(trained_dir, staging / run_id / "model_artifact")
    (staging / run_id / "evidence").mkdir()
    (staging / run_id / "evidence" / "MODEL_CARD.md").write_text("# card\n")
    settings = PipelineSettings(staging_root=staging, docker_socket=str(socket),
                                data_root=dataset.parent, min_test_accuracy=0.0,
                                min_class_recall=0.0, max_regression=1.0)
    monkeypatch.setattr(image_module, "vendor_wheels", no_wheels)
    monkeypatch.setattr("rice_mlops.release.sbom.read_base_image", lambda *_: ("", None))
    monkeypatch.setattr(release, "pipeline_signing_key",
                        lambda _: load_private_key(signing_key.read_bytes()))
    monkeypatch.setattr(registry, "log_sbom", lambda *_: None)
    monkeypatch.setattr(release, "registry_host", lambda _: None)
    params = {name: schema["default"] for name, schema in param_schemas(settings).items()}
    params["data_dir"] = str(dataset)
    trained = handoffs.trained(run_id, dataset_fingerprint="f" * 64, image_size=32,
                               artifact_sha256=digests, metrics={"test_accuracy": 1.0})

    def run(**overrides):
        return release.prepare_image_context(settings, {**params, **overrides},
                                             handoffs.dataset(str(dataset), fingerprint="f" * 64),
                                             trained, handoffs.gate("3"), "manual__t")

    return SimpleNamespace(run=run, settings=settings, run_id=run_id, staging=staging,
                           trained=trained, params=params)


def test_the_docker_task_builds_its_context_in_the_release_directory(release_task):
    plan = release_task.run()
    context = Path(plan.context)
    assert context == release_task.settings.release_root / release_task.run_id / "image"
    assert not (release_task.staging / release_task.run_id / "image").exists()
    metadata = json.loads((context / "model" / "metadata.json").read_text())
    assert metadata["release_measurement"]["images"] > 0
    # The drift reference the monitoring reads is the release zone's own measurement of these
    # bytes, one row per smoke image, kept under the release root for the version (issue 35).
    from rice_mlops.monitoring import references

    reference = references.load(release_task.settings.release_root, "3")
    assert reference.model_version == "3"
    assert reference.observations.count == metadata["release_measurement"]["images"]


def test_later_release_tasks_act_only_for_the_run_prepare_image_context_measured(
        release_task):
    """Issue 35, done-when 7: the release zone writes down which MLflow run and version it
    measured for the DAG run; a Docker task handed another run (train's XCom rewritten by a
    compute token) or running for another DAG run refuses, without retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from rice_mlops.release import ledger as release_ledger
    from rice_mlops.stages.docker_tasks import image_stages

    release_task.run()
    root = release_task.settings.release_root
    release_ledger.check(root, "manual__t", mlflow_run_id=release_task.run_id,
                         model_version="3")
    with pytest.raises(release_ledger.LedgerMismatch, match="an upstream XCom was rewritten"):
        release_ledger.check(root, "manual__t", mlflow_run_id="cd" * 16)
    with pytest.raises(release_ledger.LedgerMismatch, match="built v3"):
        release_ledger.check(root, "manual__t", mlflow_run_id=release_task.run_id,
                             model_version="4")
    with pytest.raises(release_ledger.LedgerMismatch, match="measured nothing"):
        release_ledger.check(root, "manual__other", mlflow_run_id=release_task.run_id)
    build = image_stages(release_task.trained, release_task.settings)[0]
    context = {"params": release_task.params, "run_id": "manual__t"}
    assert build.plan(context).run_id == release_task.run_id
    forged = handoffs.trained("cd" * 16, dataset_fingerprint="f" * 64, image_size=32)
    # Another run whose context the release zone once built (a rebuild of an older model).
    shutil.copytree(release_task.settings.release_root / release_task.run_id,
                    release_task.settings.release_root / ("cd" * 16))
    with pytest.raises(AirflowFailException, match="an upstream XCom was rewritten"):
        image_stages(forged, release_task.settings)[0].plan(context)


def test_the_docker_task_fails_closed_on_bytes_training_did_not_record(release_task):
    from airflow.sdk.exceptions import AirflowFailException

    tflite = release_task.staging / release_task.run_id / "model_artifact" / "model.tflite"
    tflite.write_bytes(tflite.read_bytes() + b"\0")
    with pytest.raises(AirflowFailException, match="recorded at training"):
        release_task.run()
    assert not release_task.settings.release_root.joinpath(release_task.run_id, "image").exists()


def test_the_docker_task_refuses_a_model_below_a_raised_bar_whatever_xcom_says(release_task):
    """XCom says 1.0 and the gate 'passed'; conf raised the bar to 0.99: not built."""
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="release zone measured"):
        release_task.run(min_test_accuracy=0.99)
