"""The deployment's settings and what a run's conf may ask of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rice_mlops.core.run_policy import (
    PolicyError,
    checked_run_id,
    param_schemas,
    resolve_data_dir,
    run_request,
)
from rice_mlops.core.settings import PipelineSettings, SettingsError, docker_socket_from


def _params(settings: PipelineSettings, **overrides) -> dict:
    values = {name: schema["default"] for name, schema in param_schemas(settings).items()}
    return {**values, **overrides}


def test_defaults_without_any_variable():
    settings = PipelineSettings.from_env({})
    assert settings.schedule == "0 2 * * *"
    assert settings.min_test_accuracy == 0.97 and settings.max_regression == 0.005
    assert settings.docker_socket == "/var/run/docker.sock"
    assert settings.data_root is None and settings.queue("docker") == {}


def test_every_variable_is_read():
    settings = PipelineSettings.from_env({
        "RICE_SCHEDULE": "none", "RICE_STAGING_DIR": "/srv/stage", "RICE_DATA_DIR": "/data/rice",
        "RICE_EPOCHS": "3", "RICE_MIN_TEST_ACCURACY": "0.9", "RICE_MAX_REGRESSION": "0.01",
        "RICE_GITHUB_REPOSITORY": "acme/rice", "RICE_ALLOWED_SOURCE_REPOSITORIES": "acme/a, acme/b",
        "RICE_DOCKER_QUEUE": "docker", "RICE_TRAIN_QUEUE": "gpu",
        "RICE_TASK_TIMEOUT_MINUTES": "5", "RICE_PROMOTE_WITHOUT_IMAGE": "False"})
    assert settings.schedule is None
    assert settings.staging_root == Path("/srv/stage")
    assert settings.data_root == Path("/data/rice")  # RICE_DATA_DIR is the root by default
    assert settings.allowed_source_repositories == {"acme/rice", "acme/a", "acme/b"}
    assert settings.queue("docker") == {"queue": "docker"}
    assert settings.queue("train") == {"queue": "gpu"}
    assert settings.task_timeout_minutes == 5 and settings.epochs == 3
    assert settings.promote_without_image == "false"


@pytest.mark.parametrize(("env", "named"), [
    ({"RICE_EPOCHS": "many"}, "RICE_EPOCHS"),
    ({"RICE_EPOCHS": "0"}, "RICE_EPOCHS"),
    ({"RICE_MIN_TEST_ACCURACY": "1.5"}, "RICE_MIN_TEST_ACCURACY"),
    ({"RICE_PROMOTE_WITHOUT_IMAGE": "maybe"}, "RICE_PROMOTE_WITHOUT_IMAGE"),
    ({"DOCKER_HOST": "tcp://10.0.0.1:2376"}, "DOCKER_HOST"),
])
def test_a_bad_setting_names_its_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        PipelineSettings.from_env(env)


def test_docker_socket_follows_docker_host():
    assert docker_socket_from({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}) == \
        "/run/user/1000/docker.sock"
    assert docker_socket_from({"DOCKER_HOST": "unix:///a.sock",
                               "RICE_DOCKER_SOCKET": "/b.sock"}) == "/b.sock"


def test_schemas_make_the_deployment_bars_floors():
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamValidationError

    settings = PipelineSettings(min_test_accuracy=0.9, max_regression=0.01,
                                allowed_source_repositories=frozenset({"acme/rice"}))
    schemas = param_schemas(settings)
    stricter = {"min_test_accuracy": 0.95, "max_regression": 0.0, "source_repository": "acme/rice"}
    looser = {"min_test_accuracy": 0.5, "max_regression": 0.2, "source_repository": "evil/fork"}
    for name in stricter:
        assert Param(**schemas[name]).resolve(stricter[name]) == stricter[name]
        with pytest.raises(ParamValidationError):
            Param(**schemas[name]).resolve(looser[name])


def test_run_request_refuses_what_the_schema_would_refuse_too():
    settings = PipelineSettings(min_test_accuracy=0.9,
                                allowed_source_repositories=frozenset({"acme/rice"}))
    with pytest.raises(PolicyError, match="min_test_accuracy 0.5 is below"):
        run_request(_params(settings, min_test_accuracy=0.5), settings)
    with pytest.raises(PolicyError, match="'evil/fork' is not allowed"):
        run_request(_params(settings, source_repository="evil/fork"), settings)
    request = run_request(_params(settings, source_commit="a" * 40, pusher="octocat"), settings)
    assert request.source() == {"commit": "a" * 40}
    assert request.pusher == "octocat" and request.data_dir is None


def test_data_dir_must_resolve_under_the_root(tmp_path):
    root = tmp_path / "data"
    (root / "rice").mkdir(parents=True)
    (root / "escape").symlink_to(tmp_path)
    settings = PipelineSettings(data_root=root)
    assert resolve_data_dir(str(root / "rice"), settings) == (root / "rice").resolve()
    assert resolve_data_dir("", settings) is None
    for outside in ("/", str(root / "escape"), str(root / "rice" / ".." / ".."), "relative"):
        with pytest.raises(PolicyError):
            resolve_data_dir(outside, settings)
    with pytest.raises(PolicyError, match="no data root"):
        resolve_data_dir(str(root), PipelineSettings())


@pytest.mark.parametrize("value", ["", "A" * 32, "a" * 31, "../" + "a" * 29, None, 7,
                                   "a" * 32 + "\n"])
def test_run_ids_are_checked(value):
    with pytest.raises(PolicyError):
        checked_run_id(value)
    assert checked_run_id("0123456789abcdef" * 2) == "0123456789abcdef" * 2


@pytest.mark.parametrize("value", ["-1", "20", "ten"])
def test_a_train_nice_level_outside_0_to_19_is_refused(value):
    with pytest.raises(SettingsError, match="RICE_TRAIN_NICE"):
        PipelineSettings.from_env({"RICE_TRAIN_NICE": value})


def test_training_yields_the_cpu_at_its_nice_level():
    """In a child process (a nice level cannot be raised back): the level is reached, and a
    process already nicer is left alone."""
    import subprocess
    import sys

    probe = ("import os; from rice_mlops.stages.training import _yield_cpu; os.nice({start}); "
             "_yield_cpu({level}); print(os.nice(0))")
    for start, level, expected in ((0, 10, 10), (15, 10, 15), (0, 0, 0)):
        out = subprocess.run([sys.executable, "-c", probe.format(start=start, level=level)],
                             capture_output=True, text=True, check=True, timeout=120).stdout
        assert int(out.split()[-1]) == expected, (start, level, out)
