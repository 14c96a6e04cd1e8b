"""The run's answer: its outcome line and commit state, the newer-push check, the code digest,
and the unchanged decision."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from rice_mlops.compute.code_digest import training_code_digest
from rice_mlops.core.handoffs import (
    Admission,
    Approval,
    Dataset,
    Freshness,
    Gate,
    Promoted,
    Served,
)
from rice_mlops.core.run_policy import newer_push, param_schemas
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.publication.commit_status import status_body
from rice_mlops.publication.outcome import decide_outcome

SHIPPED = Promoted(mlflow_run_id="a" * 32, model_version="5", test_accuracy=0.996,
                   dataset_fingerprint="sha256:data", classes=("A",), tflite_sha256="b" * 64,
                   image_digest="sha256:ab")
PASSED = Gate(passed=True, reason="ok", version="5", test_accuracy=0.996,
              champion_accuracy=0.994, champion_version="4")


def _failed(reason: str) -> Gate:
    return Gate(passed=False, reason=reason, version="5", test_accuracy=0.5)


def _outcome(**kwargs):
    values = {"admission": Admission(proceed=True),
              "freshness": Freshness(train=True, code_digest="sha256:c", reason="changed"),
              "gate": PASSED, "promoted": SHIPPED, "failed_tasks": []}
    return decide_outcome(**{**values, **kwargs})


def test_shipped_names_version_accuracy_and_change():
    outcome = _outcome()
    assert (outcome.kind, outcome.state, outcome.notify) == ("shipped", "success", False)
    assert outcome.note == "shipped v5: test accuracy 99.60 % (+0.20 points vs v4)"


def test_every_other_outcome():
    cases = {
        "crashed": _outcome(failed_tasks=["push_image"]),
        "not_shipped": _outcome(gate=_failed("below the minimum"), promoted=None),
        "superseded": _outcome(admission=Admission(proceed=False, superseded_by="c" * 40),
                               freshness=None, gate=None, promoted=None),
        "unchanged": _outcome(freshness=Freshness(train=False, code_digest="sha256:c",
                                                  reason="same as v4"),
                              gate=None, promoted=None),
    }
    assert {k: (o.kind, o.state, o.notify) for k, o in cases.items()} == {
        "crashed": ("crashed", "error", True), "not_shipped": ("not_shipped", "failure", True),
        "superseded": ("superseded", "error", False),
        "unchanged": ("unchanged", "success", False)}
    assert cases["not_shipped"].note == "NOT SHIPPED: below the minimum"
    assert cases["superseded"].note.startswith("superseded by cccccccccccc")
    assert "push_image" in cases["crashed"].note
    assert _outcome(promoted=None).kind == "not_shipped"  # passed, but nothing was pushed


def test_a_long_reason_fits_githubs_description_limit():
    outcome = _outcome(gate=_failed("x" * 500), promoted=None)
    assert len(outcome.description) == 140
    body = status_body(outcome.state, outcome.description, "http://airflow/run")
    assert set(body) == {"state", "description", "target_url", "context"}
    assert body["context"] == "rice-mlops/pipeline"
    with pytest.raises(ValueError):
        status_body("cancelled", "x", "http://airflow/run")


def _run(run_id, sha, after, ref="refs/heads/main", repo="acme/rice"):
    return {"dag_run_id": run_id, "run_after": after,
            "conf": {"source_commit": sha, "source_ref": ref, "source_repository": repo}}


def test_a_newer_push_to_the_same_branch_supersedes():
    mine = _run("b", "b" * 40, "2026-11-27T10:00:01Z")
    runs = [_run("a", "a" * 40, "2026-11-27T10:00:00Z"), mine,
            _run("c", "c" * 40, "2026-11-27T10:00:02Z"),
            _run("d", "d" * 40, "2026-11-27T10:00:03Z")]
    assert newer_push(mine, runs) == "d" * 40
    assert newer_push(runs[-1], runs) is None  # the newest is never superseded
    others = [_run("x", "x" * 40, "2026-11-27T11:00:00Z", ref="refs/heads/dev"),
              _run("y", "y" * 40, "2026-11-27T11:00:00Z", repo="acme/other"),
              _run("z", "b" * 40, "2026-11-27T11:00:00Z")]  # the same commit again
    assert newer_push(mine, [mine, *others]) is None
    nightly = {"dag_run_id": "n", "run_after": "2026-11-27T02:00:00Z", "conf": {}}
    assert newer_push(nightly, runs) is None


def test_code_digest_follows_params_and_packages():
    params = {"epochs": 25, "image_size": 64}
    base = training_code_digest(params, packages=["numpy==2.0.0"])
    assert base == training_code_digest(dict(reversed(params.items())), ["numpy==2.0.0"])
    assert base != training_code_digest({**params, "epochs": 26}, ["numpy==2.0.0"])
    assert base != training_code_digest(params, ["numpy==2.0.1"])
    assert training_code_digest(params).startswith("sha256:")


def test_unchanged_only_when_data_and_code_equal_the_recorded_champion(tmp_path):
    pytest.importorskip("airflow")
    from rice_mlops.compute.code_digest import training_code_digest as digest_of
    from rice_mlops.compute.training_config import TrainConfig
    from rice_mlops.stages.admission import check_changed

    settings = PipelineSettings(data_root=tmp_path)
    params = {name: schema["default"] for name, schema in param_schemas(settings).items()}
    config = TrainConfig(data_dir=tmp_path, epochs=params["epochs"],
                         image_size=params["image_size"], batch_size=params["batch_size"])
    extra = {"model_version": "4", "mlflow_run_id": "a" * 32, "tflite_sha256": "b" * 64,
             "test_accuracy": 0.99, "dataset_fingerprint": "sha256:data", "classes": ["A"],
             "code_digest": digest_of(config.model_params())}
    events = [SimpleNamespace(extra=extra, source_dag_id="rice_classifier_cicd",
                              source_task_id="promote")]
    data = Dataset(data_dir=str(tmp_path), fingerprint="sha256:data", classes=("A",),
                   counts={})
    unchanged = check_changed(settings, params, data, events)
    assert unchanged.train is False and unchanged.reason.endswith("champion v4")
    assert check_changed(settings, {**params, "force": True}, data, events).train is True
    assert check_changed(settings, {**params, "epochs": 3}, data, events).train is True
    other = replace(data, fingerprint="sha256:other")
    assert check_changed(settings, params, other, events).train is True
    assert check_changed(settings, params, data, []).train is True


def test_approval_is_asked_only_when_risky():
    pytest.importorskip("airflow")
    from rice_mlops.stages.approval import approval_body, approval_reason

    passed = Gate(passed=True, version="6", test_accuracy=0.995, champion_version="5",
                  champion_accuracy=0.994, reason="ok")
    assert approval_reason(passed, require_approval=False) is None
    assert "requires approval" in approval_reason(passed, require_approval=True)
    close = replace(passed, significant=False)
    assert "not statistically significant" in approval_reason(close, require_approval=False)
    assert approval_reason(replace(close, passed=False), require_approval=True) is None
    assert approval_reason(close, require_approval=False, not_significant=False) is None
    body = approval_body(close, "a reason")
    assert "| challenger v6 | 99.50 % |" in body and "| champion v5 | 99.40 % |" in body


def test_a_rejected_or_unanswered_release_is_not_shipped():
    rejected = _outcome(approval=Approval(required=True, approved=False, by="alice"),
                        promoted=None)
    assert rejected.note == "NOT SHIPPED: release rejected by alice"
    assert rejected.state == "failure"
    timed_out = _outcome(approval=Approval(required=True, approved=False), promoted=None)
    assert timed_out.note == "NOT SHIPPED: nobody approved the release in time"
    assert _outcome(approval=Approval(required=True, approved=True, by="bob")).kind == "shipped"


def test_named_approvers_are_the_only_ones_asked(monkeypatch):
    """RICE_APPROVERS becomes the approval task's assigned users; Airflow's auth manager then
    lets only them answer, whatever role another person holds."""
    pytest.importorskip("airflow")
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    from rice_mlops.core.settings import PipelineSettings, SettingsError
    from rice_mlops.stages.approval import ReleaseApproval

    settings = PipelineSettings.from_env({"RICE_APPROVERS": "alice, bob@example.org"})
    assert settings.approvers == ("alice", "bob@example.org")
    task = ReleaseApproval(task_id="approve_release", gate={}, settings=settings)
    assert task.assigned_users == [{"id": "alice", "name": "alice"},
                                   {"id": "bob@example.org", "name": "bob@example.org"}]
    assigned = {user["id"] for user in task.assigned_users}
    manager = SimpleAuthManager()
    assert manager.is_authorized_hitl_task(
        assigned_users=assigned, user=SimpleAuthManagerUser(username="alice", role="user"))
    assert not manager.is_authorized_hitl_task(
        assigned_users=assigned, user=SimpleAuthManagerUser(username="mallory", role="admin"))
    unnamed = ReleaseApproval(task_id="approve_release", gate={},
                              settings=PipelineSettings.from_env({}))
    assert not unnamed.assigned_users
    with pytest.raises(SettingsError, match="RICE_APPROVERS: 'a b' is not an Airflow user id"):
        PipelineSettings.from_env({"RICE_APPROVERS": "alice,a b"})


def test_the_approval_refuses_a_gate_its_task_did_not_write():
    """A plain value where quality_gate's Gate belongs (an XCom set by hand: the REST API
    stores only plain values) fails approve_release for good, before anyone is asked."""
    pytest.importorskip("airflow")
    from airflow.sdk.exceptions import AirflowFailException

    from rice_mlops.stages.approval import ReleaseApproval

    settings = PipelineSettings.from_env({})
    context = {"params": {name: schema["default"]
                          for name, schema in param_schemas(settings).items()}}
    forged = {"passed": True, "version": "9", "test_accuracy": 1.0, "significant": True}
    task = ReleaseApproval(task_id="approve_release", gate=forged, settings=settings)
    with pytest.raises(AirflowFailException, match="takes the quality_gate's Gate, not a dict"):
        task.execute(context)
    honest = ReleaseApproval(task_id="approve_release", gate=PASSED, settings=settings)
    assert honest.execute(context) == Approval(required=False, approved=True)


def test_the_report_ignores_results_their_tasks_did_not_write(monkeypatch):
    """The report (a teardown) reads a plain value in a hand-off's place as no result, says
    so in the note, and still writes it: a forged gate and release do not make it ship."""
    pytest.importorskip("airflow")
    from rice_mlops.stages import report as stage

    notes = []
    monkeypatch.setattr(stage, "write_note", lambda settings, dag_id, run_id, note:
                        notes.append(note))
    monkeypatch.setattr(stage, "commit_status", lambda *args: None)
    ti = SimpleNamespace(run_id="manual__1", xcom_pull=lambda **kwargs: None,
                         get_task_states=lambda dag_id, run_ids: {run_ids[0]: {}})
    settings = PipelineSettings.from_env({})
    params = {name: schema["default"] for name, schema in param_schemas(settings).items()}
    admitted = Admission(proceed=True)
    changed = Freshness(train=True, code_digest="sha256:c", reason="changed")
    forged_gate = {"passed": True, "version": "9", "test_accuracy": 1.0}
    forged_release = {"model_version": "9", "image_digest": "sha256:ab"}

    from airflow.sdk.exceptions import AirflowFailException

    # Written and told first, then the run is failed: a forged result is no decision.
    with pytest.raises(AirflowFailException, match="the run failed: FAILED: the gate"):
        stage.report(settings, params, admitted, changed, forged_gate, None, forged_release,
                     None, ti)
    honest = stage.report(settings, params, admitted, changed, PASSED, None, SHIPPED, None, ti)
    # A task that refused the forged value failed: its failure leads, the forgery follows.
    ti.get_task_states = lambda dag_id, run_ids: {run_ids[0]: {"shippable": "failed"}}
    with pytest.raises(AirflowFailException, match="the run failed: FAILED: shippable failed"):
        stage.report(settings, params, admitted, changed, forged_gate, None, None, None, ti)
    assert notes[0].startswith("FAILED: the gate, promoted result(s) were not written by "
                               "their tasks"), notes
    assert honest["kind"] == "shipped" and not notes[1].startswith("FAILED"), notes
    assert notes[2].startswith("FAILED: shippable failed"), notes
    assert notes[2].endswith("; the gate result(s) were not written by their tasks (changed by "
                             "hand?)"), notes


def test_a_release_zone_refusal_is_a_decision_named_in_the_note():
    """The release zone's own measurement below the bar, whatever the gate's XCom said."""
    why = ("not built: the release zone measured the model's own TFLite bytes on 30 test "
           "images: test accuracy 0.5000 below the bar 0.9700")
    refused = _outcome(failed_tasks=["prepare_image_context"], release_refusal=why,
                       promoted=None)
    assert (refused.kind, refused.state, refused.notify) == ("not_shipped", "failure", True)
    assert refused.note == f"NOT SHIPPED: {why}"
    # Another failure beside it is still a crash, and a refusal without a failure is no news.
    both = _outcome(failed_tasks=["prepare_image_context", "train"], release_refusal=why)
    assert both.kind == "crashed"
    assert _outcome(release_refusal=why).kind == "shipped"


def test_a_rollback_is_a_decision_and_a_served_rollout_is_in_the_shipped_note():
    why = "rolled back v7 at 10 %: at 10 %: p99 41 ms > 20 ms"
    rolled = _outcome(failed_tasks=["roll_out"], release_refusal=why, promoted=None)
    assert (rolled.kind, rolled.note, rolled.notify) == ("not_shipped", f"NOT SHIPPED: {why}",
                                                         True)
    served = Served(served=True, summary="serving v7 at 100 %", model_version="7",
                    reference="127.0.0.1:5000/rice@sha256:" + "c" * 64, seconds=31.0)
    shipped = _outcome(served=served)
    assert shipped.kind == "shipped" and shipped.note.endswith("; serving v7 at 100 %")
    assert "serving" not in _outcome(served=None).note  # RICE_ROLLOUT off: no claim


class _Event:
    def __init__(self, timestamp: str, extra):
        self.timestamp, self.extra = timestamp, extra


def test_a_run_started_by_drift_names_it_and_says_why_nothing_was_retrained():
    from rice_mlops.publication.outcome import Drift, Outcome, answering_drift, latest_drift

    events = [_Event("2026-12-03 10:00:00+00:00", {"summary": "drift in confidence (p=1e-05)",
                                                    "model_version": "6"}),
              _Event("2026-12-03 11:00:00+00:00", {"summary": "drift in input mean_g (p=3e-07)"
                                                    ", 2,400 predictions",
                                                    "model_version": "7",
                                                    "labelling_waiting": 1800,
                                                    "labelling_queue": "/srv/rice/labelling"}),
              _Event("2026-12-03 12:00:00+00:00", "not a dict"),
              _Event("2026-12-03 13:00:00+00:00", {"summary": 42})]
    drift = latest_drift(events)
    assert drift == Drift("v7: drift in input mean_g (p=3e-07), 2,400 predictions", 1800,
                          "/srv/rice/labelling")
    unchanged = Outcome("unchanged", "unchanged: data and code equal v7's", "success", False)
    answered = answering_drift(unchanged, drift)
    assert answered.kind == "unchanged" and answered.state == "success"
    assert answered.note.startswith(
        f"{drift.summary}; no new labelled data: 1,800 images waiting in the labelling queue "
        "(/srv/rice/labelling); not retrained")
    shipped = Outcome("shipped", "shipped v8: test accuracy 99.50 %", "success", False)
    assert answering_drift(shipped, drift).note == f"{shipped.note} (answers {drift.summary})"
    assert answering_drift(shipped, latest_drift([])) == shipped  # a push, the cron


@pytest.mark.parametrize("queue", ["/srv/q\n; rm -rf /", "x" * 201, 42, None])
def test_a_labelling_queue_path_that_is_not_plain_text_is_left_out_of_the_note(queue):
    from rice_mlops.publication.outcome import latest_drift

    extra = {"summary": "drift in confidence (p=1e-05)", "labelling_waiting": 3,
             "labelling_queue": queue}
    drift = latest_drift([_Event("2026-12-03 10:00:00+00:00", extra)])
    assert drift.labelling_waiting == 3 and drift.labelling_queue is None


@pytest.mark.parametrize("waiting", [None, -1, True, "180", 1.5])
def test_a_drift_event_without_a_usable_labelling_count_says_nothing_about_a_queue(waiting):
    from rice_mlops.publication.outcome import Outcome, answering_drift, latest_drift

    extra = {"summary": "drift in confidence (p=1e-05)", "labelling_waiting": waiting,
             "labelling_queue": "/srv/rice/labelling"}
    drift = latest_drift([_Event("2026-12-03 10:00:00+00:00", extra)])
    assert drift.labelling_waiting is None and drift.labelling_queue is None
    unchanged = Outcome("unchanged", "unchanged: data and code equal v7's", "success", False)
    assert answering_drift(unchanged, drift).note.startswith(
        "drift in confidence (p=1e-05); no new labelled data: not retrained (add labelled")


@pytest.mark.parametrize("last, now_offset, hours, cooling", [
    (None, 0, 24, False), ("2026-12-03T10:00:00+00:00", 3600, 24, True),
    ("2026-12-03T10:00:00+00:00", 25 * 3600, 24, False),
    ("2026-12-03T10:00:00+00:00", 3600, 0, False),  # no cooldown set
    ("2026-12-03T10:00:00+00:00", -3600, 24, False),  # a clock behind: never a silence
    ("yesterday", 60, 24, False),
])
def test_one_drift_storm_raises_one_event(last, now_offset, hours, cooling):
    from datetime import datetime

    from rice_mlops.stages.monitoring import in_cooldown

    base = datetime.fromisoformat("2026-12-03T10:00:00+00:00").timestamp()
    assert in_cooldown(last, base + now_offset, hours) is cooling


def _reported(monkeypatch, failed_states: dict, **results):
    """The report run on these hand-offs and task states: (its result or the exception it
    failed with, the note and the commit state it wrote before that)."""
    from rice_mlops.stages import report as stage

    told = []
    monkeypatch.setattr(stage, "write_note", lambda settings, dag_id, run_id, note:
                        told.append(("note", note)))
    monkeypatch.setattr(stage, "commit_status", lambda settings, request, run_id, state,
                        description: told.append(("status", state)))
    monkeypatch.setattr(stage, "_drift_events", lambda: [])
    ti = SimpleNamespace(run_id="manual__1", xcom_pull=lambda **kwargs: None,
                         get_task_states=lambda dag_id, run_ids: {run_ids[0]: failed_states})
    settings = PipelineSettings.from_env({})
    params = {**{name: schema["default"] for name, schema in param_schemas(settings).items()},
              "source_commit": "a" * 40}
    values = {"admission": Admission(proceed=True),
              "freshness": Freshness(train=True, code_digest="sha256:c", reason="changed"),
              "gate": PASSED, "approval": None, "promoted": SHIPPED, "served": None}
    values.update(results)
    try:
        result = stage.report(settings, params, *values.values(), ti)
    except Exception as exc:  # noqa: BLE001 - the test looks at what it raised
        result = exc
    return result, told


@pytest.mark.parametrize(("states", "results", "note"), [
    ({"validate_data": "failed"}, {"freshness": None, "gate": None, "promoted": None},
     "FAILED: validate_data failed"),
    ({"train": "failed"}, {"gate": None, "promoted": None}, "FAILED: train failed"),
    ({"push_image": "failed"}, {"promoted": None}, "FAILED: push_image failed"),
    ({"roll_out": "failed"}, {"promoted": None}, "FAILED: roll_out failed"),
    ({}, {"admission": Admission(proceed=False, refused="no trusted rice_drift event")},
     "NOT ADMITTED: no trusted rice_drift event"),
])
def test_a_run_that_failed_is_failed_by_its_report_after_it_is_told(monkeypatch, states,
                                                                    results, note):
    """The report's failure is the run's (`on_failure_fail_dagrun`): red in the grid. It
    fails only once the note and the commit status are written."""
    pytest.importorskip("airflow")
    from airflow.sdk.exceptions import AirflowFailException

    raised, told = _reported(monkeypatch, states, **results)
    assert isinstance(raised, AirflowFailException), raised
    assert str(raised).startswith(f"the run failed: {note}"), raised
    assert [kind for kind, _ in told] == ["note", "status"], told
    assert told[0][1].startswith(note) and told[1][1] in ("error", "failure"), told


@pytest.mark.parametrize(("results", "kind"), [
    ({"gate": _failed("test accuracy 0.5 below the minimum 0.97"), "promoted": None},
     "not_shipped"),
    ({"freshness": Freshness(train=False, code_digest="sha256:c", reason="same data and code"),
      "gate": None, "promoted": None}, "unchanged"),
    ({"admission": Admission(proceed=False, superseded_by="b" * 40), "freshness": None,
      "gate": None, "promoted": None}, "superseded"),
    ({"approval": Approval(required=True, approved=False, by="alice"), "promoted": None},
     "not_shipped"),
    ({}, "shipped"),
])
def test_a_run_that_decided_not_to_ship_ends_green(monkeypatch, results, kind):
    pytest.importorskip("airflow")
    reported, told = _reported(monkeypatch, {}, **results)
    assert isinstance(reported, dict) and reported["kind"] == kind, reported
    assert told[0][0] == "note"

