"""rice_mlops.operations.preload and include/airflow_local_settings.py: only the processes that
fork task processes import the tasks' libraries, and Airflow's settings module is left as it was."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from rice_mlops.core.readers import SettingsError
from rice_mlops.operations import preload
from rice_mlops.operations.tool_settings import ToolSettings


def _never_asked() -> str:
    raise AssertionError("the executor is asked only for the scheduler")


@pytest.mark.parametrize("argv, executor, forks", [
    (["airflow", "celery", "worker"], _never_asked, True),
    (["airflow", "celery", "worker", "--queues", "training"], _never_asked, True),
    (["airflow", "scheduler"], lambda: "LocalExecutor", True),
    (["airflow", "scheduler"], lambda: "LocalExecutor,CeleryExecutor", True),
    (["airflow", "scheduler"], lambda: "airflow.executors.local_executor.LocalExecutor", True),
    (["airflow", "scheduler"], lambda: "CeleryExecutor", False),  # compose: tasks elsewhere
    (["airflow", "api-server"], _never_asked, False),
    (["airflow", "dag-processor"], _never_asked, False),
    (["airflow", "triggerer"], _never_asked, False),
    (["airflow", "celery", "flower"], _never_asked, False),
    (["airflow"], _never_asked, False),
    (["pytest", "tests"], _never_asked, False),
])
def test_only_the_parents_of_task_processes_preload(argv, executor, forks):
    assert preload.forks_tasks(argv, executor) is forks


def test_the_libraries_are_imported_and_a_broken_one_is_named(monkeypatch, caplog):
    monkeypatch.delenv("RICE_PRELOAD", raising=False)
    caplog.set_level(logging.WARNING, logger="rice_mlops.operations.preload")
    loaded = preload.preload(["airflow", "celery", "worker"], _never_asked,
                             ("json", "rice_mlops_no_such_module", "email.parser"))
    assert loaded == ["json", "email.parser"]
    assert "email.parser" in sys.modules
    assert "rice_mlops_no_such_module" in caplog.text and "ModuleNotFoundError" in caplog.text


@pytest.mark.parametrize("value, libraries", [
    (None, preload.TASK_LIBRARIES),
    ("", preload.TASK_LIBRARIES),
    ("none", ()),
    ("FALSE", ()),
    ("docker, airflow.providers.docker.operators.docker",
     ("docker", "airflow.providers.docker.operators.docker")),
])
def test_what_is_preloaded_is_configurable(value, libraries):
    env = {} if value is None else {"RICE_PRELOAD": value}
    assert ToolSettings.from_env(env).preload == libraries


@pytest.mark.parametrize("value", ["os; import evil", "../x", "a,,b.c-d", "mlflow .tracking"])
def test_a_setting_that_names_no_module_is_refused(value):
    with pytest.raises(SettingsError, match="not module names"):
        ToolSettings.from_env({"RICE_PRELOAD": value})


def test_nothing_is_preloaded_when_turned_off(monkeypatch):
    monkeypatch.setenv("RICE_PRELOAD", "none")
    assert preload.preload(["airflow", "celery", "worker"], _never_asked) == []


def test_the_release_worker_leaves_mlflow_out():
    """The compose service of the Docker queue preloads, but never MLflow."""
    from tests.helpers.compose_file import COMPOSE

    names = preload.module_names(
        COMPOSE["services"]["airflow-worker-docker"]["environment"]["RICE_PRELOAD"])
    assert names and not any(name.split(".")[0] == "mlflow" for name in names)


_PROBE = """
import json, sys
sys.argv = json.loads(sys.argv[1])
import airflow.settings
print(json.dumps({"mlflow": "mlflow" in sys.modules, "docker": "docker" in sys.modules,
                  "clobbered": [n for n in ("preload", "sys", "_executor")
                                if n in vars(airflow.settings) and n != "sys"]}))
"""


@pytest.mark.parametrize("command, executor, loaded", [
    (["scheduler"], "LocalExecutor", True),
    (["scheduler"], "CeleryExecutor", False),
    (["celery", "worker"], "CeleryExecutor", True),
    (["api-server"], "LocalExecutor", False),
])
def test_airflow_imports_the_hook_at_start_up(tmp_path, command, executor, loaded):
    """Through Airflow's own start-up: `airflow_local_settings` is found on the path the
    package installs (include/), and exports nothing into airflow.settings."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__EXECUTOR": executor,
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    env.pop("RICE_PRELOAD", None)
    probe = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(["airflow", *command])],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result == {"mlflow": loaded, "docker": loaded, "clobbered": []}, probe.stderr[-2000:]
