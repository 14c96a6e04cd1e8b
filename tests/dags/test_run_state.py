"""What state a run of the pipeline DAG ends in, decided by Airflow's own scheduling loop
(`dag.test()` on a throw-away SQLite database, tests/helpers/dag_run_states.py) with each
stage's work replaced: a run that failed is red, even when every task after the failure was
skipped (issue 38). The real stack's runs (an unreadable image, a refused push, a rollback, a
forged drift event; a gate refusal and an unchanged rerun, which stay green) are in
tests/integration."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.paths import REPO
from tests.helpers.pipeline import airflow_env


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    env = _env(home)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=300)
    return home


def _env(home) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("RICE_", "AIRFLOW_", "AIRFLOW__", "MLFLOW_"))}
    return {**base, **airflow_env("http://127.0.0.1:9", home / "staging"),
            "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "RICE_RETRY_DELAY_SECONDS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}


def _run(home, scenario: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.helpers.dag_run_states", scenario],
                          env=_env(home), cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_a_training_that_fails_after_its_retries_fails_the_run(airflow_home):
    run = _run(airflow_home, "train_crashes")
    tasks = {task: ti["state"] for task, ti in run["tasks"].items()}
    assert run["tasks"]["train"]["try_number"] == 3, run["tasks"]["train"]  # retries=2
    assert tasks["train"] == "failed" and tasks["report"] == "failed", tasks
    assert run["state"] == "failed", tasks
    assert run["notes"] == ["FAILED: train failed; nothing shipped (see the task logs)"]
    for task in ("quality_gate", "build_image", "push_image", "roll_out", "promote"):
        assert tasks[task] == "upstream_failed", tasks


@pytest.fixture(scope="module")
def not_admitted(airflow_home) -> dict:
    return _run(airflow_home, "not_admitted")


def test_a_run_that_was_not_admitted_is_red_though_every_task_after_it_skipped(not_admitted):
    run = not_admitted
    tasks = {task: ti["state"] for task, ti in run["tasks"].items()}
    assert tasks["admitted"] == "success" and tasks["train"] == "skipped", tasks
    assert tasks["promote"] == "skipped" and tasks["report"] == "failed", tasks
    assert run["state"] == "failed", tasks
    assert run["notes"] == ["NOT ADMITTED: started by a rice_drift event nobody trusts"]



def test_the_pipeline_metrics_read_the_failed_runs_from_airflows_record(airflow_home,
                                                                       not_admitted):
    """Prometheus's view of those runs (`/rice/metrics`): the training DAG last failed when its
    latest red run ended, never succeeded (no sample, so `absent()` alerts), and no drift was
    raised; read from the same metadata database by the API server's query."""
    assert not_admitted["state"] == "failed"
    probe = ("import json, time\n"
             "from rice_mlops.stages.pipeline_metrics import read_facts, exposition\n"
             "facts = read_facts()\n"
             "print('RESULT ' + json.dumps({'success': facts.last_success,"
             " 'failure': facts.last_failure, 'drift': facts.drift_events,"
             " 'text': exposition(facts, time.time()).decode()}))\n")
    done = subprocess.run([sys.executable, "-c", probe], env=_env(airflow_home), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    facts = json.loads(lines[-1].removeprefix("RESULT "))
    import time

    assert "rice_classifier_cicd" not in facts["success"]
    assert 0 < time.time() - facts["failure"]["rice_classifier_cicd"] < 900
    assert facts["drift"] == 0
    text = facts["text"]
    assert 'rice_pipeline_last_failure_timestamp_seconds{dag_id="rice_classifier_cicd"}' in text
    assert "rice_pipeline_last_success_timestamp_seconds{" not in text
