"""The pipeline answers back: commit statuses on the GitHub double, run notes through the REST
API, e-mail to a real SMTP server, superseded and unchanged runs (real Airflow, PostgreSQL,
MLflow, Docker engine and registry)."""

from __future__ import annotations

import time

import pytest

from tests.helpers.pipeline import NOTIFY, SHA, dag_conf

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _statuses(double, sha: str, run_id: str) -> list[dict]:
    return [s for s in double.statuses if s["sha"] == sha and s["target_url"].endswith(
        f"/runs/{run_id}")]


def _mlflow_runs(dag_run_id: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name("rice-classifier")
    return client.search_runs([experiment.experiment_id], filter_string=(
        f"tags.`rice.airflow_dag_run_id` = '{dag_run_id}'"))


def test_a_shipped_run_answers_on_its_commit_and_in_its_note(airflow_pg, shipped_run,
                                                             github_double):
    statuses = _statuses(github_double, SHA, "e2e-shipped")
    assert [s["state"] for s in statuses][0] == "pending"
    final = statuses[-1]
    assert final["state"] == "success", statuses
    assert final["context"] == "rice-mlops/pipeline"
    assert final["target_url"] == f"{airflow_pg.url}/dags/rice_classifier_cicd/runs/e2e-shipped"
    assert final["description"].startswith("shipped v")
    assert airflow_pg.note("e2e-shipped") == final["description"]
    assert airflow_pg.task_states("e2e-shipped")["report"] == "success"


def test_same_data_and_code_ends_unchanged(airflow_pg, shipped_run, github_double):
    conf, _ = shipped_run
    unchanged = {**conf, "source_commit": "3" * 40}
    assert airflow_pg.trigger(unchanged, "answer-unchanged").status_code == 200
    run = airflow_pg.wait_for_run("answer-unchanged", timeout=600)
    states = airflow_pg.task_states("answer-unchanged")
    assert run["state"] == "success", states
    assert states["check_changed"] == "success" and states["train"] == "skipped", states
    assert states["promote"] == "skipped" and states["open_pull_request"] == "skipped"
    assert airflow_pg.note("answer-unchanged").startswith(
        "unchanged: same dataset and training code as champion v")
    assert _mlflow_runs("answer-unchanged") == []
    assert _statuses(github_double, "3" * 40, "answer-unchanged")[-1]["state"] == "success"


def _train_state(stack, run_id: str) -> str | None:
    return next((t["state"] for t in stack.task_instances(run_id) if t["task_id"] == "train"),
                None)


def test_of_three_quick_pushes_the_middle_one_is_superseded_and_force_retrains(
        airflow_pg, shipped_run, tiny_real_dataset, github_double, mailbox):
    """The last push carries the champion's data and code (its conf) with `force`, so it
    retrains rather than ending as unchanged; a bar of 1.0 then refuses it: NOT SHIPPED, told
    on the commit and by e-mail. The first push needs approval, and the compute zone answers it
    with its own task token (issue 35, done-when 6): the release zone reads who answered with
    its own account, finds no person, and builds nothing. (Two trainings serve three claims.)"""
    champion_conf, _ = shipped_run
    base = dag_conf(tiny_real_dataset, force=True, min_test_accuracy=1.0)
    shas = ("5" * 40, "6" * 40, "7" * 40)
    needs_approval = dag_conf(tiny_real_dataset, force=True, require_approval=True)
    assert airflow_pg.trigger({**needs_approval, "source_commit": shas[0]}, "answer-push-0"
                              ).status_code == 200
    deadline = time.monotonic() + 600
    while _train_state(airflow_pg, "answer-push-0") != "running":
        assert time.monotonic() < deadline, airflow_pg.describe("answer-push-0")
        time.sleep(1)
    forced = {**champion_conf, "force": True, "min_test_accuracy": 1.0}
    for index, conf in ((1, base), (2, forced)):  # both queue behind the training run
        assert airflow_pg.trigger({**conf, "source_commit": shas[index]},
                                  f"answer-push-{index}").status_code == 200
    _answer_with_the_task_token(airflow_pg, "answer-push-0")
    runs = [airflow_pg.wait_for_run(f"answer-push-{i}", timeout=900) for i in range(3)]
    assert [r["state"] for r in runs[1:]] == ["success"] * 2
    forged = airflow_pg.task_states("answer-push-0")
    assert forged["approve_release"] == "success", forged  # the compute zone was convinced
    assert forged["prepare_image_context"] == "failed", forged
    for task_id in ("build_image", "push_image", "roll_out", "promote"):
        assert forged[task_id] in ("upstream_failed", "skipped"), forged
    assert airflow_pg.note("answer-push-0").startswith(
        "NOT SHIPPED: approve_release was answered with a task's token"), forged
    middle = airflow_pg.task_states("answer-push-1")
    assert middle["admit"] == "success" and middle["validate_data"] == "skipped", middle
    assert middle["train"] == "skipped"
    assert airflow_pg.note("answer-push-1").startswith(f"superseded by {shas[2][:12]}")
    assert _statuses(github_double, shas[1], "answer-push-1")[-1]["state"] == "error"
    assert _mlflow_runs("answer-push-1") == []
    for index in (0, 2):
        assert airflow_pg.task_states(f"answer-push-{index}")["train"] == "success"
    assert len(_mlflow_runs("answer-push-2")) == 1
    note = airflow_pg.note("answer-push-2")
    assert note.startswith("NOT SHIPPED: test accuracy") and "below the minimum 1.0000" in note
    final = _statuses(github_double, shas[2], "answer-push-2")[-1]
    assert final["state"] == "failure" and final["description"] == note[:140]
    mails = [m for m in mailbox.to(NOTIFY) if "answer-push-2" in m["Subject"]]
    assert len(mails) == 1
    body = mails[0].get_body().get_content()
    assert "below the minimum 1.0000" in body
    assert f"{airflow_pg.url}/dags/rice_classifier_cicd/runs/answer-push-2" in body


def _respond(stack, run_id: str, option: str) -> None:
    """Answer approve_release as a person would: some seconds after it started waiting.

    Airflow 3.3 races an answer given within a second of the task parking (the executor's
    report of the parked process lands after the resumed try was queued, and the try is
    retried, waiting again): wait a little first, and answer again any try that waits anew.
    """
    answered: set[int] = set()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        ti = next((t for t in stack.task_instances(run_id) if t["task_id"] == "approve_release"),
                  {})
        state, attempt = ti.get("state"), ti.get("try_number")
        if state in ("success", "skipped", "failed"):
            return
        if state == "awaiting_input" and attempt not in answered:
            time.sleep(5)
            response = stack.api(
                "PATCH", f"/dags/rice_classifier_cicd/dagRuns/{run_id}/taskInstances/"
                         "approve_release/-1/hitlDetails", json={"chosen_options": [option]})
            assert response.status_code in (200, 409), response.text
            answered.add(attempt)
        time.sleep(1)
    raise AssertionError(stack.describe(run_id))


def _answer_with_the_task_token(stack, run_id: str) -> None:
    """Answer approve_release as the compute zone could: with the token its worker holds for
    that task, through the execution API (Airflow records no person). Airflow 3.3 resumes a
    parked task with such an answer when its deadline passes (the scheduler's timeout sweep);
    the deadline (24 h here) is moved to now in the metadata database: time travel, not
    something the attacker needs."""
    import httpx
    import psycopg

    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        ti = next((t for t in stack.task_instances(run_id) if t["task_id"] == "approve_release"),
                  {})
        if ti.get("state") in ("success", "skipped", "failed"):
            raise AssertionError(f"approve_release ended before it was answered: {ti}")
        if ti.get("state") == "awaiting_input":
            answer = httpx.patch(f"{stack.url}/execution/hitlDetails/{ti['id']}", timeout=30,
                                 headers={"Authorization": f"Bearer {stack.task_token(ti['id'])}"},
                                 json={"ti_id": ti["id"], "chosen_options": ["Approve"],
                                       "params_input": {}})
            assert answer.status_code == 200, answer.text
            assert answer.json()["responded_by_user"] is None  # nobody, as Airflow records it
            url = stack.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg", "")
            with psycopg.connect(url) as conn:
                conn.execute("update task_instance set trigger_timeout = now() where id = %s",
                             (ti["id"],))
            return
        time.sleep(1)
    raise AssertionError(stack.describe(run_id))


def test_a_release_that_needs_approval_waits_for_a_person(airflow_pg, shipped_run,
                                                         tiny_real_dataset):
    from mlflow import MlflowClient

    client = MlflowClient()
    outcomes = {}
    for run_id, sha, option in (("answer-rejected", "8" * 40, "Reject"),
                                ("answer-approved", "9" * 40, "Approve")):
        # Two epochs: the approved model becomes champion, and its training code digest must
        # differ from the one-epoch runs later tests expect to train (not "unchanged").
        conf = dag_conf(tiny_real_dataset, epochs=2, force=True, source_commit=sha,
                        require_approval=True)
        assert airflow_pg.trigger(conf, run_id).status_code == 200
        _respond(airflow_pg, run_id, option)
        assert airflow_pg.wait_for_run(run_id, timeout=900)["state"] == "success"
        outcomes[run_id] = airflow_pg.task_states(run_id)
        version = next(v for v in client.search_model_versions("name='rice-classifier'")
                       if client.get_run(v.run_id).data.tags.get("rice.airflow_dag_run_id")
                       == run_id)
        assert version.tags["rice.approval_by"] == "admin"
        assert version.tags["rice.approval"] == ("approved" if option == "Approve"
                                                 else "rejected")
    rejected, approved = outcomes["answer-rejected"], outcomes["answer-approved"]
    for task_id in ("prepare_image_context", "push_image", "open_pull_request", "promote"):
        assert rejected[task_id] == "skipped", rejected
        assert approved[task_id] == "success", approved
    assert airflow_pg.note("answer-rejected") == "NOT SHIPPED: release rejected by admin"
    assert airflow_pg.note("answer-approved").startswith("shipped v")
