"""Faults during one pipeline run on the compose stack, each where it hurts most, and the run
still ends with exactly one of everything.

One DAG run carries several faults, each at a different task (they do not overlap, so each
outcome is its own): the Celery worker running `train` is SIGKILLed mid-epoch; MLflow is
restarted between `train` and `quality_gate`; the registry is stopped once the gate runs
(nothing before `push_image` needs it: the context, the build and the smoke test are local)
and given back once the push's first attempt failed; PostgreSQL is restarted while the first
release task it catches runs (`prepare_image_context`, `build_image` or `smoke_test`, a few
seconds each); the scheduler, DAG processor and triggerer are SIGKILLed once `smoke_test` runs.
Each test asserts its own fault's outcome and the run's ledger (tests/helpers/run_ledger.py).
The run trains because newly labelled images were filed into the stack's data first (issue
23's loop: after a drift note, labelled images retrain), not because it is forced.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers.chaos_report import ChaosReport
from tests.helpers.compose_project import ComposeStack
from tests.helpers.container_faults import (
    container_of_host,
    containers,
    service_of,
    sigkill,
    wait_restarted,
    wait_service_healthy,
)
from tests.helpers.datasets import SMALL_SUBSET, file_labelled
from tests.helpers.recovery_waits import Background, unhealthy, wait_airflow_health, wait_http
from tests.helpers.retrying_airflow import Airflow
from tests.helpers.run_ledger import Ledger, Mlflow, ledger
from tests.helpers.timestamps import parse_time, utc_now

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = 15  # RICE_EPOCHS of the shared stack (tests/conftest.py)
LABELLED_PER_CLASS = 4
RESTARTED_BY_KILL = ("airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
RELEASE_TASKS = ("prepare_image_context", "build_image", "smoke_test")


@dataclass
class FaultedRun:
    stack: ComposeStack
    api: Airflow
    run_id: str
    commit: str
    state: str
    faults: dict[str, dict]
    tries: dict[str, list[dict]]
    ledger: Ledger
    unhealthy: dict[str, str]

    def recovered_s(self, name: str, task: str) -> float | None:
        """Seconds from the fault to the end of `task`'s last (successful) attempt."""
        end = parse_time((self.tries.get(task) or [{}])[-1].get("end_date"))
        at = self.faults[name].get("t")
        return round(end - at, 1) if end and at else None

    def states(self, task: str) -> list[str]:
        return [t["state"] for t in self.tries.get(task, [])]


def _epochs_done(mlflow: Mlflow, run_id: str) -> int:
    """Epochs the DAG run's running MLflow run has logged (Keras autolog: `loss` per epoch).
    From MLflow, not the task log: `train` runs on the remote worker, whose log file the API
    server does not hold (docs/scale-out.md, "Task logs")."""
    running = [r["info"]["run_id"] for r in mlflow.runs_of(run_id, "ACTIVE_ONLY")
               if r["info"]["status"] == "RUNNING"]
    return max((mlflow.epochs_logged(run) for run in running), default=0)


def _attempt(record: dict, step: Callable[[dict], None]) -> None:
    try:
        step(record)
    except Exception as exc:  # noqa: BLE001 - the fault's own test reports it
        record.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")


def _inject(record: dict, when: str, ti: dict | None, **details) -> None:
    record.update(injected_at=utc_now(), t=time.time(), t_mono=time.monotonic(), when=when,
                  task_state=(ti or {}).get("state"), try_number=(ti or {}).get("try_number"),
                  **details)


@pytest.fixture(scope="module")
def faulted_run(shared_compose_stack, real_data) -> FaultedRun:
    stack = shared_compose_stack
    api = Airflow(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"])
    mlflow = Mlflow(stack.mlflow, stack.mlflow_pipeline)
    api.unpause()
    assert unhealthy(stack) == {}, stack.compose("ps").stdout
    commit = hashlib.sha1(f"chaos {uuid.uuid4()}".encode()).hexdigest()
    run_id = f"chaos__{commit[:12]}"
    faults: dict[str, dict] = {name: {} for name in (
        "train_worker_sigkill", "mlflow_restart", "postgres_restart", "registry_stop",
        "scheduler_kill")}
    background = Background()
    # Newly labelled images, as people file them after a drift note: the run retrains on
    # them because the data changed since the champion the stack's first run promoted
    # (test_compose_stack_first_run.py; no force), which
    # test_labelled_images_are_what_makes_the_run_retrain checks.
    labelled = file_labelled(real_data, Path(stack.env["RICE_DATA_DIR"]), LABELLED_PER_CLASS)
    assert all(len(files) == LABELLED_PER_CLASS for files in labelled.values()), labelled
    api.trigger(run_id, {"source_commit": commit, "source_ref": "refs/heads/main",
                         "source_repository": "local/rice-mlops"})

    def kill_train_worker(record):
        ti = api.wait_task(run_id, "train", {"running"}, timeout=900)
        if ti is None:
            raise RuntimeError("the run ended before train ran")
        deadline = time.monotonic() + 600
        while (epochs := _epochs_done(mlflow, run_id)) < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("train logged no epoch in 600 s")
            time.sleep(0.5)
        ti = api.task(run_id, "train")
        container = container_of_host(stack, ti["hostname"])
        running = [r["info"]["run_id"] for r in mlflow.runs_of(run_id, "ACTIVE_ONLY")
                   if r["info"]["status"] == "RUNNING"]
        _inject(record, f"train running, {epochs} of {EPOCHS} epochs logged", ti,
                epochs_logged=epochs, service=service_of(container),
                container=container["Name"].lstrip("/"), mlflow_runs_running=running)
        record["pid"] = sigkill(container)
        background.measure(record, "service_back_s", lambda: (
            wait_restarted(container), wait_service_healthy(stack, service_of(container))),
            since=record["t_mono"])

    def restart_mlflow(record):
        ti = api.wait_task(run_id, "train", {"success"}, timeout=1500)
        if ti is None:
            raise RuntimeError("the run ended before train succeeded")
        gate = api.task(run_id, "quality_gate")
        _inject(record, "train succeeded, quality_gate not started", ti,
                quality_gate_state=gate["state"],
                fetch_artifacts_state=api.task(run_id, "fetch_artifacts")["state"])
        restarted = stack.compose("restart", "mlflow", timeout=180)
        record["restart"] = restarted.returncode
        background.measure(record, "service_back_s", lambda: wait_http(
            f"{stack.mlflow}/health"), since=record["t_mono"])

    def restart_postgres(record):
        # Any release task will do (a task running while its metadata database goes away);
        # each takes a few seconds now, so the first of them that runs is taken.
        deadline = time.monotonic() + 900
        while not (running := sorted(t for t, i in api.tasks(run_id).items()
                                     if i["state"] == "running" and t in RELEASE_TASKS)):
            if api.run(run_id)["state"] in ("success", "failed"):
                raise RuntimeError("the run ended before a release task ran")
            if time.monotonic() > deadline:
                raise TimeoutError("no release task ran in 900 s")
            time.sleep(0.25)
        _inject(record, f"{running[0]} running", api.task(run_id, running[0]), running=running)
        record["restart"] = stack.compose("restart", "postgres", timeout=180).returncode
        background.measure(record, "service_back_s", lambda: (
            wait_airflow_health(stack, "metadatabase", 0),
            wait_service_healthy(stack, "postgres")), since=record["t_mono"])

    def stop_registry(record):
        # Nothing before the push needs it: the context, the build (local base image) and
        # the smoke test (no network). Stopped once the gate runs, so the fast release
        # tasks that follow cannot reach the push first.
        ti = api.wait_task(run_id, "quality_gate", {"running", "success"}, timeout=900)
        if ti is None:
            raise RuntimeError("the run ended before quality_gate ran")
        push = api.task(run_id, "push_image")
        if push["state"] not in (None, "none", "scheduled", "queued"):
            raise RuntimeError(f"push_image already {push['state']}: fault missed")
        _inject(record, f"quality_gate {ti['state']}, push_image not started", push,
                quality_gate_state=ti["state"])
        record["stop"] = stack.compose("stop", "-t", "1", "registry", timeout=120).returncode

    def kill_scheduler(record):
        ti = api.wait_task(run_id, "smoke_test", {"running", "success", "up_for_retry"},
                           timeout=900)
        if ti is None:
            raise RuntimeError("the run ended before smoke_test ran")
        victims = [c for c in containers(stack) if service_of(c) in RESTARTED_BY_KILL]
        _inject(record, f"smoke_test {ti['state']}", ti,
                services=sorted(service_of(c) for c in victims))
        for container in victims:
            sigkill(container)
        since = record["t"]
        background.measure(record, "service_back_s", lambda: (
            [wait_restarted(c) for c in victims],
            [wait_airflow_health(stack, part, since)
             for part in ("scheduler", "dag_processor", "triggerer")]),
            since=record["t_mono"])

    def give_registry_back(record):
        first = api.wait_task(run_id, "push_image", {"up_for_retry", "failed", "success"},
                              timeout=900)
        record["first_push_attempt"] = (first or {}).get("state")
        record["restart"] = stack.compose("start", "registry", timeout=120).returncode
        record["down_s"] = round(time.monotonic() - record["t_mono"], 1)
        background.measure(record, "service_back_s", lambda: wait_http(
            f"http://{stack.registry}/v2/"), since=record["t_mono"])

    try:
        _attempt(faults["train_worker_sigkill"], kill_train_worker)
        _attempt(faults["mlflow_restart"], restart_mlflow)
        _attempt(faults["registry_stop"], stop_registry)
        _attempt(faults["postgres_restart"], restart_postgres)
        _attempt(faults["scheduler_kill"], kill_scheduler)
        if "t" in faults["registry_stop"]:
            _attempt(faults["registry_stop"], give_registry_back)
    finally:
        stack.compose("start", "registry", timeout=120)  # whatever happened above
    run = api.wait_run(run_id, timeout=1800)
    background.join()
    tries = {}
    for task, current in api.tasks(run_id).items():
        tries[task] = api.tries(run_id, task)
        if current["try_number"] not in [t["try_number"] for t in tries[task]]:
            tries[task].append(current)
    return FaultedRun(stack, api, run_id, commit, run["state"], faults, tries,
                      ledger(stack, api, run_id, commit), unhealthy(stack))


def _report(report: ChaosReport, run: FaultedRun, name: str, fault: str, task: str) -> dict:
    record = run.faults[name]
    entry = {
        "fault": fault,
        "dag_run_id": run.run_id,
        "injected_at": record.get("injected_at"),
        "injected_when": record.get("when"),
        "outcome": {"run": run.state, task: run.states(task)},
        "recovery_s": {"service_back": record.get("service_back_s"),
                       f"{task}_succeeded": run.recovered_s(name, task)},
        "duplicates_found": run.ledger.problems,
        "ledger": run.ledger.counts,
        "services_unhealthy_after": run.unhealthy,
        "details": {k: v for k, v in record.items()
                    if k not in ("injected_at", "when", "t", "t_mono", "service_back_s")},
    }
    report.add(entry)
    return record


def _assert_recovered(run: FaultedRun, record: dict) -> None:
    assert not record.get("errors"), record["errors"]
    assert run.state == "success", {t: run.states(t) for t in run.tries}
    assert run.ledger.problems == [], run.ledger.counts
    assert run.unhealthy == {}, run.stack.compose("ps").stdout


def test_train_worker_sigkilled_mid_epoch_is_retried(faulted_run, chaos_report):
    run = faulted_run
    record = _report(chaos_report, run, "train_worker_sigkill",
                     "Celery worker running train SIGKILLed mid-epoch", "train")
    assert 1 <= record.get("epochs_logged", 0) < EPOCHS, record
    tries = run.states("train")
    # The killed attempt is failed (heartbeat timeout), a later one succeeded on a worker.
    assert len(tries) >= 2 and tries[0] in ("failed", "up_for_retry"), tries
    assert tries[-1] == "success", tries
    assert record.get("service_back_s") is not None, record
    _assert_recovered(run, record)


def test_mlflow_restarted_between_train_and_quality_gate(faulted_run, chaos_report):
    run = faulted_run
    record = _report(chaos_report, run, "mlflow_restart",
                     "MLflow restarted between train and quality_gate", "quality_gate")
    assert record.get("restart") == 0, record
    assert record.get("quality_gate_state") not in ("running", "success"), record
    first_gate = parse_time(run.tries["quality_gate"][0]["start_date"])
    assert first_gate and first_gate > record["t"], "quality_gate started before the restart"
    assert run.states("quality_gate")[-1] == "success"
    _assert_recovered(run, record)


def test_postgres_restarted_while_tasks_run(faulted_run, chaos_report):
    run = faulted_run
    record = _report(chaos_report, run, "postgres_restart",
                     "PostgreSQL restarted while a release task runs",
                     (run.faults["postgres_restart"].get("running") or RELEASE_TASKS)[0])
    assert record.get("restart") == 0, record
    assert set(record.get("running", [])) & set(RELEASE_TASKS), record
    assert record.get("service_back_s") is not None, record
    _assert_recovered(run, record)


def test_registry_stopped_when_push_image_starts(faulted_run, chaos_report):
    run = faulted_run
    record = _report(chaos_report, run, "registry_stop",
                     "registry stopped from the gate on, back within push_image's retry window",
                     "push_image")
    # push_image had not started when the registry went away
    assert record.get("stop") == 0, record
    assert record.get("task_state") in (None, "none", "scheduled", "queued"), record
    assert record.get("first_push_attempt") == "up_for_retry", record  # failed, retried
    tries = run.states("push_image")
    assert len(tries) >= 2 and tries[0] in ("failed", "up_for_retry"), tries
    assert tries[-1] == "success", tries
    _assert_recovered(run, record)


def test_scheduler_dag_processor_and_triggerer_killed_mid_run(faulted_run, chaos_report):
    run = faulted_run
    record = _report(chaos_report, run, "scheduler_kill",
                     "scheduler, DAG processor and triggerer SIGKILLed and restarted mid-run",
                     "push_image")
    assert record.get("services") == sorted(RESTARTED_BY_KILL), record
    assert record.get("service_back_s") is not None, record
    _assert_recovered(run, record)


def test_labelled_images_are_what_makes_the_run_retrain(faulted_run):
    """The images filed since the champion change the dataset, so the run trains without
    `force`, on every one of them."""
    freshness = faulted_run.api.xcom(faulted_run.run_id, "check_changed")
    assert freshness["train"] is True and freshness["reason"] == \
        "dataset or training code changed", freshness
    assert "force" not in faulted_run.api.run(faulted_run.run_id)["conf"]
    counts = faulted_run.api.xcom(faulted_run.run_id, "validate_data")["counts"]
    assert counts["train"] == {cls: SMALL_SUBSET["train"] + LABELLED_PER_CLASS
                               for cls in counts["train"]}, counts
    assert faulted_run.states("train")[-1] == "success"


def test_the_canary_steps_were_measured_by_prometheus(faulted_run):
    """This run's challenger rolled out against the first run's model: each canary step's
    answers and p99 came from the stack's Prometheus (PromQL), which holds the candidate's
    traffic under its slot and model version; roll_out links the rollout's graph there."""
    from tests.helpers.prometheus_api import Prometheus

    run, api = faulted_run, faulted_run.api
    served = api.xcom(run.run_id, "roll_out")
    assert served and served["served"], served
    assert [v for v in served["verdicts"] if v.startswith("at 10 %")], served["verdicts"]
    last_try = run.tries["roll_out"][-1]["try_number"]
    log = api.log(run.run_id, "roll_out", last_try)
    assert "canary windows measured by Prometheus" in log, log[-3000:]
    prometheus = Prometheus(run.stack.env)
    version = served["model_version"]
    slot = prometheus.query(f'rice_serving_model_info{{model_version="{version}"}}')
    assert len(slot) == 1, slot
    answered = prometheus.query('sum(rice_serving_requests_total{endpoint="/predict",'
                                f'slot="{slot[0]["metric"]["slot"]}"}})')
    assert answered and float(answered[0]["value"][1]) > 0, answered
    links = api.get(f"/dags/rice_classifier_cicd/dagRuns/{run.run_id}/taskInstances/"
                    "roll_out/links")
    graph = links["extra_links"].get("Rollout in Prometheus") or ""
    assert graph.startswith(f"{prometheus.url}/graph?g0.expr="), links
    page = httpx.get(graph, auth=prometheus.auth, timeout=30, follow_redirects=True)
    assert page.status_code == 200 and "g0.expr=" in str(page.url), page.url


def test_the_rollout_is_seen_in_prometheus_and_reached_from_the_task(faulted_run):
    """A person's path (issue 38): the roll_out task in the Airflow UI shows its links; the
    Prometheus one opens the graph of the rollout (each slot's answers a second, the shift
    from stable to the candidate). The two screenshots are the README's pictures."""
    from tests.helpers.browser import airflow_login, browser_page, screenshot
    from tests.helpers.prometheus_api import Prometheus

    run, api = faulted_run, faulted_run.api
    prometheus = Prometheus(run.stack.env)
    links = api.get(f"/dags/rice_classifier_cicd/dagRuns/{run.run_id}/taskInstances/"
                    "roll_out/links")["extra_links"]
    graph = links["Rollout in Prometheus"]
    with browser_page(http_credentials=prometheus.auth) as page:
        airflow_login(page, run.stack.airflow, run.stack.env["AIRFLOW_ADMIN_PASSWORD"])
        # The task instance's Details tab lists its extra links.
        page.goto(f"{run.stack.airflow}/dags/rice_classifier_cicd/runs/{run.run_id}/tasks/"
                  "roll_out/details")
        button = page.get_by_role("link", name="Rollout in Prometheus")
        button.wait_for(timeout=60_000)
        page.get_by_role("link", name="Served version").wait_for(timeout=10_000)
        assert screenshot(page, "airflow-roll-out-links.png").stat().st_size > 10_000
        assert button.get_attribute("href") == graph
        page.goto(graph)
        # The graph's legend lists each slot once its series are drawn.
        page.get_by_text('{slot="', exact=False).first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        assert "rice_serving_requests_total" in text
        assert screenshot(page, "prometheus-rollout.png").stat().st_size > 10_000
