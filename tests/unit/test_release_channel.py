"""The release zone's command channel (issue 35): the scheduler's second Celery executor publishes
to the release broker and nowhere else, and the release worker runs only this project's release
tasks, whatever else a message on its queue asks for (a callback, a connection test, another
DAG, another queue, a DAG file of the sender's choosing)."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from celery import Celery
from celery.app.trace import build_tracer

from rice_mlops.stages import release_channel
from rice_mlops.stages.release_channel import RefusedWorkload, refusal, worker_celery_config

TOKEN = "eyJ-the-task-token-never-logged"


def _task(dag_id="rice_classifier_cicd", task_id="build_image", queue="docker",
          dag_rel_path=None, bundle="dags-folder") -> dict:
    return {"type": "ExecuteTask", "token": TOKEN, "log_path": "x.log",
            "dag_rel_path": dag_rel_path or f"{dag_id}.py",
            "bundle_info": {"name": bundle, "version": None},
            "ti": {"id": str(uuid.uuid4()), "task_id": task_id, "dag_id": dag_id,
                   "run_id": "manual__1", "try_number": 1, "dag_version_id": str(uuid.uuid4()),
                   "queue": queue, "pool_slots": 1, "priority_weight": 1}}


def _callback(marker) -> dict:
    return {"type": "ExecuteCallback", "token": TOKEN, "log_path": None,
            "dag_rel_path": "rice_classifier_cicd.py",
            "bundle_info": {"name": "dags-folder", "version": None},
            "callback": {"id": str(uuid.uuid4()), "fetch_method": "import_path",
                         "data": {"path": "pathlib.Path.touch", "kwargs": {"self": str(marker)}}}}


@pytest.mark.parametrize("dag_id", sorted(release_channel.RELEASE_DAG_IDS))
def test_a_release_task_of_this_project_is_run(dag_id):
    assert refusal(json.dumps(_task(dag_id=dag_id)), "docker") is None


@pytest.mark.parametrize("change, expected", [
    ({"dag_id": "someone_elses_dag"}, "DAG 'someone_elses_dag' has no release tasks"),
    ({"queue": "default"}, "queue 'default', this worker serves 'docker'"),
    ({"dag_rel_path": "../../tmp/evil/rice_classifier_cicd.py"}, "is not rice_classifier_cicd.py"),
    ({"dag_rel_path": "/tmp/rice_classifier_cicd.py"}, "is not rice_classifier_cicd.py"),
    ({"dag_rel_path": "rice_monitoring.py"}, "is not rice_classifier_cicd.py"),
    ({"bundle": "planted-bundle"}, "bundle 'planted-bundle', not 'dags-folder'"),
])
def test_a_task_that_is_not_ours_is_refused(change, expected):
    reason = refusal(json.dumps(_task(**change)), "docker")
    assert reason and expected in reason, reason
    assert TOKEN not in reason


def test_callbacks_connection_tests_and_junk_are_refused(tmp_path):
    assert "ExecuteCallback workload" in refusal(json.dumps(_callback(tmp_path / "m")), "docker")
    test_connection = {"type": "TestConnection", "token": TOKEN, "queue": "docker",
                       "connection_test_id": str(uuid.uuid4()), "connection_id": "rice_registry",
                       "timeout": 10}
    assert "TestConnection workload" in refusal(json.dumps(test_connection), "docker")
    for junk in ("", "{", "[]", json.dumps({"type": "ExecuteTask"}), "x" * 10_000):
        assert refusal(junk, "docker").startswith("not an Airflow workload"), junk[:20]


def _worker_task(calls: list) -> Celery:
    """A Celery app configured as the release worker's, its `execute_workload` a recorder."""
    app = Celery("release-test", config_source={**worker_celery_config(),
                                                 "broker_url": "memory://",
                                                 "result_backend": "cache+memory://"})

    def execute_workload(input: str) -> None:
        calls.append(json.loads(input)["type"])

    return app.task(name="execute_workload")(execute_workload)


def test_the_worker_refuses_before_the_workload_runs(tmp_path, caplog, monkeypatch):
    """Through Celery's own call path (the tracer a prefork child runs): a forged callback never
    reaches `execute_workload`, the refusal is logged with its reason and without the token,
    and a release task of ours still runs."""
    monkeypatch.setenv("RICE_DOCKER_QUEUE", "docker")
    calls: list = []
    task = _worker_task(calls)
    trace = build_tracer("execute_workload", task, app=task.app)
    marker = tmp_path / "marker"
    with caplog.at_level(logging.ERROR, logger="rice_mlops.stages.release_channel"):
        refused = trace("forged-1", (json.dumps(_callback(marker)),), {}, {"id": "forged-1"})
        other_queue = trace("forged-2", (json.dumps(_task(queue="default")),), {},
                            {"id": "forged-2"})
    assert isinstance(refused.retval.exception, RefusedWorkload)
    assert isinstance(other_queue.retval.exception, RefusedWorkload)
    assert calls == [] and not marker.exists()
    logged = caplog.text
    assert "release worker refused Celery task forged-1" in logged
    assert "ExecuteCallback workload" in logged and TOKEN not in logged
    ours = trace("ours", (json.dumps(_task()),), {}, {"id": "ours"})
    assert ours.retval is None and calls == ["ExecuteTask"]


def test_the_release_executor_publishes_to_the_release_broker_only(monkeypatch):
    """The second executor's app has the release broker and result backend, not `[celery]`'s,
    and what it publishes is on that broker's queue; without the setting it will not start."""
    from airflow.executors.workloads import ExecuteTask
    from pydantic import TypeAdapter

    from rice_mlops.stages import release_executor

    monkeypatch.setenv("AIRFLOW__CELERY__BROKER_URL", "redis://:compute@redis:6379/0")
    monkeypatch.setenv("AIRFLOW__RELEASE_CELERY__BROKER_URL", "memory://release")
    monkeypatch.setenv("AIRFLOW__RELEASE_CELERY__RESULT_BACKEND", "cache+memory://")
    executor = release_executor.ReleaseCeleryExecutor()
    app = executor.celery_app
    assert app.conf.broker_url == "memory://release"
    assert executor.bulk_state_fetcher.celery_app is app
    workload = TypeAdapter(ExecuteTask).validate_python(_task())
    [(key, _, result)] = executor._send_workloads_to_celery([("k", workload, "docker", None)])
    assert key == "k" and not isinstance(result, release_executor.utils.ExceptionWithTraceback)
    with app.connection_for_read() as connection:
        message = connection.SimpleQueue("docker").get(timeout=5)
    assert message.headers["task"] == "execute_workload"
    assert refusal(message.payload[0][0], "docker") is None

    monkeypatch.delenv("AIRFLOW__RELEASE_CELERY__BROKER_URL")
    with pytest.raises(ValueError, match="AIRFLOW__RELEASE_CELERY__BROKER_URL"):
        release_executor.release_celery_app()


def test_release_tasks_name_the_release_executor_only_when_configured():
    from rice_mlops.core.settings import PipelineSettings

    plain = PipelineSettings.from_env({"RICE_DOCKER_QUEUE": "docker"})
    assert plain.queue("docker") == {"queue": "docker"}
    walled = PipelineSettings.from_env({"RICE_DOCKER_QUEUE": "docker",
                                        "RICE_RELEASE_EXECUTOR": "release"})
    assert walled.queue("docker") == {"queue": "docker", "executor": "release"}
    assert walled.queue("train") == {}
