"""The `train` stage on whichever worker runs it: it trains only on the files validate_data
checked, and only what check_changed judged the run by, so a remote worker's stale or altered
copy of the images, its other settings or its other training code fail the task instead of
being recorded as the run's model."""

from __future__ import annotations

import dataclasses

import pytest
from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.compute import training_run as training_module
from rice_mlops.compute.data import discover
from rice_mlops.core.fingerprint import fingerprint
from rice_mlops.core.handoffs import Dataset
from rice_mlops.core.run_policy import param_schemas
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.stages import admission, training
from tests.helpers.datasets import copy_subset


@pytest.fixture
def data(real_data, tmp_path):
    return copy_subset(real_data, tmp_path / "rice", {"train": 4, "val": 2, "test": 2})


def _validated(root) -> Dataset:
    dataset = discover(root)
    return Dataset(data_dir=str(root), fingerprint=fingerprint(dataset),
                   classes=tuple(dataset.classes), counts={})


def _params(settings: PipelineSettings) -> dict:
    """The run's params as a worker with these settings parses the DAG: the Param defaults."""
    return {name: schema["default"] for name, schema in param_schemas(settings).items()}


def _checked(root, validated: Dataset, env: dict | None = None):
    """check_changed's verdict on the control plane (no champion yet: train)."""
    settings = PipelineSettings.from_env({"RICE_DATA_DIR": str(root), **(env or {})})
    return admission.check_changed(settings, _params(settings), validated, [])


def _train(root, validated: Dataset, monkeypatch, fresh=None, env: dict | None = None) -> list:
    calls = []

    def train_once(config, dag_run_id, validated=None):
        calls.append((config.data_dir, validated))
        raise RuntimeError("stop here: what train_once was given is the test")

    monkeypatch.setattr(training_module, "train_once", train_once)
    settings = PipelineSettings.from_env({"RICE_DATA_DIR": str(root), **(env or {})})
    fresh = fresh or _checked(root, validated)
    with pytest.raises(RuntimeError, match="stop here"):
        training.train(settings, _params(settings), validated, fresh, "manual__1")
    return calls


def test_the_files_validate_data_checked_are_trained_on(data, monkeypatch):
    validated = _validated(data)
    [(data_dir, (dataset, recorded))] = _train(data, validated, monkeypatch)
    assert str(data_dir) == str(data) and recorded == validated.fingerprint
    assert fingerprint(dataset) == validated.fingerprint


@pytest.mark.parametrize("change", ["altered", "added", "removed"])
def test_a_copy_that_differs_from_the_validated_one_fails_the_task(data, monkeypatch, change):
    validated = _validated(data)
    image = next((data / "train" / "Basmati").iterdir())
    if change == "altered":
        image.write_bytes(image.read_bytes() + b"\0")
    elif change == "added":
        (image.parent / ("copy-" + image.name)).write_bytes(image.read_bytes())
    else:
        image.unlink()
    calls = []
    monkeypatch.setattr(training_module, "train_once", lambda *a, **k: calls.append(a))
    settings = PipelineSettings.from_env({"RICE_DATA_DIR": str(data)})
    with pytest.raises(AirflowFailException, match="not the one validate_data checked") as caught:
        training.train(settings, _params(settings), validated, _checked(data, validated),
                       "manual__1")
    assert validated.fingerprint in str(caught.value) and "RICE_DATA_DIR" in str(caught.value)
    assert calls == []  # nothing trained


def _refused(data, validated, monkeypatch, fresh, env: dict | None = None) -> str:
    calls = []
    monkeypatch.setattr(training_module, "train_once", lambda *a, **k: calls.append(a))
    settings = PipelineSettings.from_env({"RICE_DATA_DIR": str(data), **(env or {})})
    with pytest.raises(AirflowFailException) as caught:
        training.train(settings, _params(settings), validated, fresh, "manual__1")
    assert calls == []  # nothing trained
    return str(caught.value)


def test_a_worker_with_other_pipeline_settings_refuses_to_train(data, monkeypatch):
    validated = _validated(data)
    fresh = _checked(data, validated, {"RICE_EPOCHS": "25"})  # the control plane's
    message = _refused(data, validated, monkeypatch, fresh, {"RICE_EPOCHS": "12"})
    assert "epochs 12 here, 25 there" in message and "worker.env" in message


def test_a_worker_with_other_training_code_refuses_to_train(data, monkeypatch):
    validated = _validated(data)
    fresh = dataclasses.replace(_checked(data, validated), source_digest="sha256:" + "0" * 64)
    assert "training code" in _refused(data, validated, monkeypatch, fresh)


def test_a_patched_verdict_without_its_parameters_is_refused(data, monkeypatch):
    validated = _validated(data)
    fresh = dataclasses.replace(_checked(data, validated), model_params=["epochs"])
    assert "epochs" in _refused(data, validated, monkeypatch, fresh)


def test_a_verdict_written_before_it_recorded_what_it_judged_by_is_trained(data, monkeypatch):
    validated = _validated(data)
    older = dataclasses.replace(_checked(data, validated), model_params={}, source_digest="")
    assert len(_train(data, validated, monkeypatch, fresh=older)) == 1
