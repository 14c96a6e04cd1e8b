"""Every DAG file parses, follows the team's conventions, and stays light to parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
DAG_ID = "rice_classifier_cicd"


@pytest.fixture(scope="module")
def dagbag():
    """The DAGs as they parse on the defaults: a RICE_* variable in the developer's shell
    does not reach them (test_*_come_from_settings parse with chosen values)."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("RICE_")]:
            patch.delenv(name)
        return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def defaults():
    from rice_mlops.core.settings import PipelineSettings

    return PipelineSettings()


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags[DAG_ID]


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_imports_without_errors(dagbag, path):
    assert not any(Path(f).name == path.name for f in dagbag.import_errors), dagbag.import_errors


def test_every_dag_follows_conventions(dagbag):
    assert dagbag.dags, "no DAG found"
    for dag in dagbag.dags.values():
        assert dag.tags, dag.dag_id
        assert dag.doc_md, dag.dag_id
        for task in dag.tasks:
            assert task.retries >= 2, (dag.dag_id, task.task_id)
            assert task.retry_delay >= timedelta(seconds=1)
            assert task.owner != "airflow", "set a real owner"


def test_schedule_and_concurrency(dag, defaults):
    # The nightly cron, or a rice_drift event (RICE_RETRAIN_ON_DRIFT, on by default).
    assert dag.timetable.timetable.expression == defaults.schedule
    assert str(dag.timetable.timetable.timezone) == "UTC"
    assert dag.timetable.asset_condition.name == "rice_drift"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"mlops", "rice"} <= set(dag.tags)


def test_nightly_timetable_next_run_is_0200_utc_the_next_day(dag):
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = coerce_to_core_timetable(dag.timetable)
    last = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    info = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(last, last),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    assert info.run_after == datetime(2026, 3, 11, 2, 0, tzinfo=UTC)
    first = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=datetime(2026, 3, 10, 2, 1, tzinfo=UTC),
                                    latest=None, catchup=True),
    )
    assert first.run_after == datetime(2026, 3, 11, 2, 0, tzinfo=UTC)


def test_task_graph_order(dag):
    def downstream(task_id: str) -> set[str]:
        return set(dag.get_task(task_id).downstream_task_ids)

    assert "train" in downstream("validate_data")
    assert "fetch_artifacts" in downstream("train")
    assert "quality_gate" in downstream("fetch_artifacts")
    assert "prepare_image_context" in downstream("quality_gate")
    assert "attest_image" in downstream("record_image")
    assert "open_pull_request" in downstream("attest_image")
    # Champion moves only once the image serves (or the rollout is off or had no image).
    assert "roll_out" in downstream("open_pull_request")
    assert "promote" in downstream("roll_out")
    # They run when the image stages were skipped (no engine) or no pull request is configured,
    # never after a stop decision.
    for name in ("open_pull_request", "roll_out", "promote"):
        assert dag.get_task(name).trigger_rule == "none_failed_min_one_success", name
    # Every stop skips every task after it (the report, a teardown, excepted): each task after
    # it is its direct downstream or passes the skip on (all_success), so a task added after a
    # stop cannot run past it (rice_mlops.stages.stops.skip_all_after wires that).
    from rice_mlops.stages.stops import bypasses

    def after(task_id: str) -> set[str]:
        return dag.get_task(task_id).get_flat_relative_ids(upstream=False) - {"report"}

    publication = {"prepare_image_context", "build_image", "push_image", "attest_image",
                   "open_pull_request", "roll_out", "promote"}
    assert after("admitted") == set(dag.task_ids) - {"admit", "admitted", "report"}
    assert {"train", "quality_gate", "approve_release"} | publication <= after("changed")
    assert {"approve_release"} | publication <= after("shippable")
    assert publication <= after("approve_release")
    for name in ("admitted", "changed", "shippable", "approve_release"):
        assert dag.get_task(name).ignore_downstream_trigger_rules is False
        assert bypasses(dag.get_task(name)) == [], name
        assert {"open_pull_request", "roll_out", "promote"} <= downstream(name), name
    # The report is a teardown after everything: it runs whatever happened and its own
    # outcome does not decide the run's state.
    report = dag.get_task("report")
    assert report.is_teardown and "admit" in report.upstream_task_ids
    assert set(dag.task_ids) - {"report"} <= report.get_flat_relative_ids(upstream=True)
    # Nothing is published, served or promoted without passing the gate first.
    gated = dag.get_task("quality_gate").get_flat_relative_ids(upstream=False)
    assert {"open_pull_request", "roll_out", "promote"} <= gated
    assert dag.get_task("train").task_type in ("_PythonDecoratedOperator", "PythonOperator")
    # Image: built, then smoke-tested, and only pushed when the smoke test succeeded.
    assert "build_image" in downstream("prepare_image_context")
    assert "smoke_test" in downstream("build_image")
    smoke_descendants = dag.get_task("smoke_test").get_flat_relative_ids(upstream=False)
    assert {"push_image", "record_image", "attest_image", "roll_out", "promote"} <= \
        smoke_descendants
    assert dag.get_task("push_image").trigger_rule == "all_success"
    assert {"prepare_image_context", "build_image", "smoke_test", "push_image"} <= gated
    assert "open_pull_request" in dag.get_task("roll_out").upstream_task_ids
    # Housekeeping follows the staging of this run and ends before the gate and image stages.
    assert "prune_old_builds" in downstream("fetch_artifacts")
    assert "quality_gate" in downstream("prune_old_builds")
    assert "prune_old_builds" not in gated


def test_docker_tasks_use_the_engine_socket_and_no_tmp_mount(dag):
    from airflow.providers.docker.operators.docker import DockerOperator

    docker_tasks = [t for t in dag.tasks if isinstance(t, DockerOperator)]
    assert {t.task_id for t in docker_tasks} == {"build_image", "smoke_test", "push_image"}
    for task in docker_tasks:
        assert task.mount_tmp_dir is False
        assert task.network_mode == "none"
    assert "REGISTRY_PASSWORD" not in str(dag.get_task("push_image").environment)
    for task in docker_tasks:  # nothing a user can patch decides what runs in the container
        assert "xcom" not in f"{task.command} {task.image} {task.environment} {task.entrypoint}"
        assert task.auto_remove == "force"  # a failed push container held credentials


def test_the_dag_file_only_wires():
    source = (REPO / "dags" / "rice_classifier_cicd.py").read_text()
    assert len(source.splitlines()) <= 150
    assert "xcom_pull" not in source and "{{" not in source
    assert "os.environ" not in source and "import os" not in source


def test_every_task_and_the_run_have_a_timeout(dag, defaults):
    assert dag.dagrun_timeout == timedelta(minutes=defaults.dagrun_timeout_minutes)
    for task in dag.tasks:
        assert task.execution_timeout is not None, task.task_id
    assert dag.get_task("train").execution_timeout == timedelta(
        minutes=defaults.train_timeout_minutes)


def test_timeouts_and_queues_come_from_settings():
    code = f"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(REPO / "dags")!r})
assert not bag.import_errors, bag.import_errors
dag = bag.dags[{DAG_ID!r}]
print(json.dumps({{t.task_id: [t.queue, t.execution_timeout.total_seconds(), t.executor]
                  for t in dag.tasks}} | {{"run": dag.dagrun_timeout.total_seconds()}}
                 | {{"release_dags": sorted(d.dag_id for d in bag.dags.values()
                                            if any(t.executor == "release" for t in d.tasks))}}))
"""
    # As compose runs it: the release zone's tasks on an executor of their own (issue 35).
    env = {**os.environ, "RICE_DOCKER_QUEUE": "docker", "RICE_TRAIN_QUEUE": "training",
           "RICE_TASK_TIMEOUT_MINUTES": "7", "RICE_DAGRUN_TIMEOUT_MINUTES": "90",
           "RICE_RELEASE_EXECUTOR": "release",
           "AIRFLOW__CORE__EXECUTOR":
               "LocalExecutor,release:rice_mlops.stages.release_executor.ReleaseCeleryExecutor"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    tasks = json.loads(out.stdout.strip().splitlines()[-1])
    assert tasks.pop("run") == 90 * 60
    from rice_mlops.stages.release_channel import RELEASE_DAG_IDS

    # Every DAG with release tasks is one the release worker agrees to run, and no other.
    assert set(tasks.pop("release_dags")) == RELEASE_DAG_IDS
    # attest_image, roll_out and promote hold the registry credentials, which only that
    # queue's workers may read; roll_out starts the serving containers.
    socket_tasks = {"prune_old_builds", "prepare_image_context", "build_image", "smoke_test",
                    "push_image", "attest_image", "roll_out", "promote"}
    assert {t for t, (queue, _, _) in tasks.items() if queue == "docker"} == socket_tasks
    assert {t for t, (_, _, executor) in tasks.items() if executor == "release"} == socket_tasks
    assert {executor for t, (_, _, executor) in tasks.items() if t not in socket_tasks} == {None}
    assert tasks["train"][0] == "training"
    assert all(seconds == 7 * 60 for t, (_, seconds, _) in tasks.items() if t != "train")


def test_the_rollback_dag_runs_in_the_release_zone_on_demand_only(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    from rice_mlops.core.vocabulary import ROLLBACK_DAG_ID

    rollback = dagbag.dags[ROLLBACK_DAG_ID]
    assert type(rollback.timetable).__name__ == "NullTimetable"  # triggered, never scheduled
    assert rollback.max_active_runs == 1
    assert [t.task_id for t in rollback.tasks] == ["roll_back"]
    version = rollback.params.get_param("model_version")
    version.resolve(None)  # empty: the one before the current
    version.resolve("12")
    for bad in ("0", "v3", "1; rm -rf /", "../x"):
        with pytest.raises(ParamValidationError):
            version.resolve(bad)
    code = f"""
from airflow.dag_processing.dagbag import DagBag
print(DagBag(dag_folder={str(REPO / "dags")!r}).dags[{ROLLBACK_DAG_ID!r}].tasks[0].queue)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "RICE_DOCKER_QUEUE": "docker"}, check=True,
                         timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "docker"


def test_params_are_typed_and_validated(dag):
    params = dag.params
    assert params["epochs"] == 25
    assert params["min_test_accuracy"] == 0.97
    schema = {name: params.get_param(name).schema for name in params}
    assert schema["epochs"]["type"] == "integer"
    assert schema["min_test_accuracy"]["maximum"] == 1
    # The deployment's bars are floors: conf may only be stricter.
    assert schema["min_test_accuracy"]["minimum"] == 0.97
    assert schema["max_regression"]["maximum"] == 0.005
    for name in ("source_commit", "source_ref", "source_repository", "data_dir",
                 "max_regression", "image_size", "batch_size"):
        assert name in schema


def _parse_in_fresh_interpreter(extra_env: dict[str, str]) -> dict:
    code = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(REPO / "dags")!r})
dag = bag.dags.get({DAG_ID!r})
print(json.dumps({{"tensorflow": "tensorflow" in sys.modules, "mlflow": "mlflow" in sys.modules,
                  "keras": "keras" in sys.modules, "errors": list(bag.import_errors.values()),
                  "schedule": str(getattr(getattr(dag.timetable, "timetable", dag.timetable),
                                          "expression", None)) if dag else "?",
                  "on_drift": "rice_drift" in repr(getattr(dag.timetable, "asset_condition",
                                                           None))}}))
"""
    env = {**os.environ, **extra_env}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_parsing_imports_no_heavy_library_and_touches_no_database():
    # An unreachable metadata database: any query during parsing would fail the import.
    result = _parse_in_fresh_interpreter(
        {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://nobody@127.0.0.1:9/none"})
    assert result["tensorflow"] is False
    assert result["mlflow"] is False
    assert result["keras"] is False
    assert result["errors"] == []


@pytest.mark.parametrize(("value", "summary"), [("30 3 * * 1", "30 3 * * 1"),
                                                ("none", "None")])
def test_schedule_is_overridable_by_environment(value, summary):
    parsed = _parse_in_fresh_interpreter({"RICE_SCHEDULE": value})
    assert parsed["schedule"] == summary and parsed["on_drift"] is True


def test_drift_starts_no_run_when_retraining_on_drift_is_off():
    parsed = _parse_in_fresh_interpreter({"RICE_RETRAIN_ON_DRIFT": "false"})
    from rice_mlops.core.settings import PipelineSettings

    assert parsed["schedule"] == PipelineSettings().schedule and parsed["on_drift"] is False


def test_the_report_decides_the_run_state(dag):
    """A teardown's state is ignored unless `on_failure_fail_dagrun`: with it, the report is
    the one task Airflow reads the run's state from (issue 38), so every task must reach it
    and none may be a leaf of its own."""
    report = dag.get_task("report")
    assert report.is_teardown and report.on_failure_fail_dagrun
    assert {t.task_id for t in dag.tasks if not t.downstream_list} == {"report"}
    assert report.get_flat_relative_ids(upstream=True) == set(dag.task_ids) - {"report"}


def test_the_tasks_that_make_something_link_to_it(dag):
    """Issue 38: the names and XCom keys travel in the serialized DAG, which is all the UI
    and the REST API need to show a link a worker computed."""
    from airflow.serialization.serialized_objects import DagSerialization

    expected = {"train": ["MLflow run"], "quality_gate": ["Model card"],
                "open_pull_request": ["Pull request"], "push_image": ["Image in the registry"],
                "attest_image": ["Image in the registry"],
                "roll_out": ["Rollout in Prometheus", "Served version"]}
    named = {t.task_id: sorted(link.name for link in t.operator_extra_links) for t in dag.tasks
             if t.operator_extra_links}
    assert named == expected
    serialized = DagSerialization.to_dict(dag)["dag"]["tasks"]
    carried = {t["__var"]["task_id"]: sorted(t["__var"].get("_operator_extra_links", {}))
               for t in serialized if t["__var"].get("_operator_extra_links")}
    assert carried == expected
