"""The `train` stage on whichever worker runs it: it trains only on the files validate_data
checked, so a remote worker's stale or altered copy of the images fails the task instead of
being recorded under the validated fingerprint."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from rice_mlops import training as training_module
from rice_mlops.data import discover
from rice_mlops.data.fingerprint import fingerprint
from rice_mlops.handoffs import Dataset
from rice_mlops.run_policy import param_schemas
from rice_mlops.settings import PipelineSettings
from rice_mlops.stages import training
from tests.helpers.datasets import copy_subset


@pytest.fixture
def data(real_data, tmp_path):
    return copy_subset(real_data, tmp_path / "rice", {"train": 4, "val": 2, "test": 2})


def _validated(root) -> Dataset:
    dataset = discover(root)
    return Dataset(data_dir=str(root), fingerprint=fingerprint(dataset),
                   classes=tuple(dataset.classes), counts={})


def _train(root, validated: Dataset, monkeypatch) -> list:
    calls = []

    def train_once(config, dag_run_id, validated=None):
        calls.append((config.data_dir, validated))
        raise RuntimeError("stop here: what train_once was given is the test")

    monkeypatch.setattr(training_module, "train_once", train_once)
    settings = PipelineSettings.from_env({"RICE_DATA_DIR": str(root)})
    params = {name: schema["default"] for name, schema in param_schemas(settings).items()}
    with pytest.raises(RuntimeError, match="stop here"):
        training.train(settings, params, validated, "manual__1")
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
    params = {name: schema["default"] for name, schema in param_schemas(settings).items()}
    with pytest.raises(AirflowFailException, match="not the one validate_data checked") as caught:
        training.train(settings, params, validated, "manual__1")
    assert validated.fingerprint in str(caught.value) and "RICE_DATA_DIR" in str(caught.value)
    assert calls == []  # nothing trained
