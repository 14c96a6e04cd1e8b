"""The webhook application in-process, with a recording Airflow client instead of the API."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from fastapi.testclient import TestClient

from rice_mlops.core.airflow_rest import AirflowRejected, AirflowUnavailable, TriggerResult
from rice_mlops.ingress.app import create_app
from rice_mlops.ingress.recent import OncePerRun
from rice_mlops.ingress.settings import WebhookSettings
from rice_mlops.ingress.signature import sign

SECRET = "an-in-process-test-secret-of-decent-length"
SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


class RecordingAirflow:
    """Answers like the REST API: the first trigger of a run id creates it, later ones 409."""

    def __init__(self):
        self.calls: list[tuple[str, str, dict]] = []
        self.runs: set[str] = set()
        self.fail_with: Exception | None = None

    async def trigger(self, dag_id: str, run_id: str, conf: dict) -> TriggerResult:
        self.calls.append((dag_id, run_id, conf))
        if self.fail_with is not None:
            raise self.fail_with
        created = run_id not in self.runs
        self.runs.add(run_id)
        return TriggerResult(dag_run_id=run_id, created=created)


@pytest.fixture
def airflow():
    return RecordingAirflow()


@pytest.fixture
def client(airflow):
    settings = WebhookSettings(secret=SECRET, branch="main", repositories=frozenset({"acme/rice"}),
                        dag_id="rice_classifier_cicd", api_url="http://unused", username="u",
                        password="p", triggers_at_once=2)
    return TestClient(create_app(settings, client=airflow))


def _post(client, payload: dict, *, event="push", delivery=None):
    body = json.dumps(payload).encode()
    return client.post("/github", content=body, headers={
        "X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRET, body), "Content-Type": "application/json"})


def _push(sha=SHA, repository="acme/rice") -> dict:
    return {"ref": "refs/heads/main", "after": sha, "repository": {"full_name": repository},
            "pusher": {"name": "octocat"}, "compare": "https://github.com/acme/rice/compare/x"}


def test_a_push_asks_airflow_for_one_run_with_the_commit(client, airflow):
    response = _post(client, _push())
    assert response.status_code == 200, response.text
    assert airflow.calls == [("rice_classifier_cicd", f"github__acme.rice__{SHA}", {
        "source_commit": SHA, "source_ref": "refs/heads/main", "source_repository": "acme/rice",
        "pusher": "octocat", "compare_url": "https://github.com/acme/rice/compare/x"})]


def test_a_replayed_body_with_fresh_delivery_ids_is_the_same_push(client, airflow):
    answers = [_post(client, _push()).json() for _ in range(4)]
    assert [a.get("duplicate", False) for a in answers] == [False, True, True, True]
    assert {call[1] for call in airflow.calls} == {f"github__acme.rice__{SHA}"}
    assert len(airflow.runs) == 1
    _post(client, _push(sha="a" * 40))
    assert len(airflow.runs) == 2  # another commit is another run


def test_nothing_is_asked_of_airflow_for_unsigned_or_ignored_deliveries(client, airflow):
    body = json.dumps(_push()).encode()
    unsigned = client.post("/github", content=body, headers={
        "X-GitHub-Event": "push", "X-GitHub-Delivery": "d1", "Content-Type": "application/json"})
    assert unsigned.status_code == 401
    assert _post(client, _push(repository="evil/fork")).status_code == 202
    assert _post(client, {"zen": "hi"}, event="ping").status_code == 200
    assert airflow.calls == []


def _post_form(client, fields: dict, *, event="push", content_type=None):
    """As GitHub sends a delivery whose webhook's content type is the form: the JSON in the
    `payload` field, the signature over the encoded body."""
    from urllib.parse import urlencode

    body = urlencode(fields).encode()
    return client.post("/github", content=body, headers={
        "X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRET, body),
        "Content-Type": content_type or "application/x-www-form-urlencoded"})


def test_a_form_encoded_push_starts_the_same_run_as_the_json_one(client, airflow):
    form = _post_form(client, {"payload": json.dumps(_push())})
    assert form.status_code == 200 and form.json()["dag_run_id"] == f"github__acme.rice__{SHA}"
    assert _post(client, _push()).json()["duplicate"] is True
    [(dag_id, run_id, conf)] = airflow.calls
    assert conf["source_commit"] == SHA and conf["source_repository"] == "acme/rice"
    charset = _post_form(client, {"payload": json.dumps(_push(sha="b" * 40))},
                         content_type="Application/X-WWW-Form-Urlencoded; charset=utf-8")
    assert charset.status_code == 200, charset.text


@pytest.mark.parametrize(("fields", "content_type", "status", "fragment"), [
    ({"payload": json.dumps(_push()), "extra": "1"}, None, 400, "exactly one 'payload'"),
    ({"other": json.dumps(_push())}, None, 400, "exactly one 'payload'"),
    ({"payload": "{not json"}, None, 400, "not valid JSON"),
    ({"payload": "[1, 2]"}, None, 400, "not a JSON object"),
    ({"payload": json.dumps(_push())}, "text/plain", 415, "application/x-www-form-urlencoded"),
    ({"payload": json.dumps(_push())}, "application/jsonp", 415, "Content-Type must be"),
])
def test_a_malformed_form_delivery_is_refused_and_says_why(client, airflow, fields,
                                                          content_type, status, fragment):
    response = _post_form(client, fields, content_type=content_type)
    assert response.status_code == status and fragment in response.json()["reason"]
    assert airflow.calls == []


def test_a_form_body_that_is_not_utf8_is_refused(client, airflow):
    body = b"payload=%ff%fe"
    response = client.post("/github", content=body, headers={
        "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-utf8",
        "X-Hub-Signature-256": sign(SECRET, body),
        "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and airflow.calls == []


def _counts(client) -> dict[tuple[str, str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics")
    assert response.status_code == 200
    return {(s.labels["outcome"], s.labels["status"], s.labels["kind"]): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples if s.name == "rice_webhook_deliveries_total"}


def test_every_refusal_is_logged_at_warning_and_counted(client, airflow, caplog):
    body = json.dumps(_push()).encode()
    wrong = client.post("/github", content=body, headers={
        "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-wrong",
        "X-Hub-Signature-256": sign("another secret of some length", body),
        "Content-Type": "application/json"})
    assert wrong.status_code == 401
    assert _post(client, _push(repository="evil/fork")).status_code == 202
    assert _post(client, _push()).status_code == 200
    assert _post(client, {"zen": "hi"}, event="ping").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("refused (401)" in w for w in warnings), warnings
    assert any("repository evil/fork is not in the allow-list" in w for w in warnings)
    assert not any(SECRET in w or "octocat" in w for w in caplog.text.splitlines())
    assert _counts(client) == {("refused", "401", "signature"): 1.0,
                               ("refused", "202", "repository"): 1.0,
                               ("triggered", "200", "none"): 1.0,
                               ("ignored", "200", "none"): 1.0}


@pytest.mark.parametrize(("error", "status"), [
    (AirflowUnavailable("connection refused"), 503),
    (AirflowRejected(400, "min_test_accuracy too low"), 422),
])
def test_airflow_failures_map_to_what_github_should_do(client, airflow, error, status):
    airflow.fail_with = error
    response = _post(client, _push())
    assert response.status_code == status, response.text


# --- a push triggered once per run id: replays and redeliveries cost no REST call -----------

class SlowAirflow(RecordingAirflow):
    """Holds each trigger until released, as a busy API server does."""

    def __init__(self):
        super().__init__()
        self.release = asyncio.Event()

    async def trigger(self, dag_id: str, run_id: str, conf: dict) -> TriggerResult:
        self.calls.append((dag_id, run_id, conf))
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        created = run_id not in self.runs
        self.runs.add(run_id)
        return TriggerResult(dag_run_id=run_id, created=created)


def _once(airflow, clock=None, ttl=120.0, max_entries=4096) -> OncePerRun:
    return OncePerRun(airflow.trigger, ttl=ttl, max_entries=max_entries,
                      **({"clock": clock} if clock else {}))


def test_replays_within_the_window_never_reach_airflow(client, airflow):
    answers = [_post(client, _push()).json() for _ in range(50)]
    assert len(airflow.calls) == 1
    assert all(a["dag_run_id"] == f"github__acme.rice__{SHA}" for a in answers)
    assert [a.get("duplicate", False) for a in answers] == [False] + [True] * 49


def test_after_the_window_airflow_is_asked_again():
    airflow, now = RecordingAirflow(), [0.0]
    once = _once(airflow, clock=lambda: now[0], ttl=120)
    first = asyncio.run(once.trigger("d", "r", {}))
    now[0] = 119.0
    assert asyncio.run(once.trigger("d", "r", {})).created is False
    assert len(airflow.calls) == 1
    now[0] = 120.0  # a run deleted meanwhile would be created again now
    assert asyncio.run(once.trigger("d", "r", {})).created is False  # Airflow's own 409
    assert first.created is True and len(airflow.calls) == 2


def test_concurrent_deliveries_of_one_push_share_one_trigger():
    async def scenario():
        airflow = SlowAirflow()
        once = _once(airflow)
        waiting = [asyncio.ensure_future(once.trigger("d", "r", {})) for _ in range(20)]
        other = asyncio.ensure_future(once.trigger("d", "other", {}))
        await asyncio.sleep(0.01)
        assert [call[1] for call in airflow.calls] == ["r", "other"]
        airflow.release.set()
        results = await asyncio.gather(*waiting, other)
        return airflow, results

    airflow, results = asyncio.run(scenario())
    assert [r.created for r in results] == [True] + [False] * 19 + [True]
    assert len(airflow.calls) == 2


def test_a_failed_trigger_is_not_remembered_and_fails_its_waiters_too():
    async def scenario():
        airflow = SlowAirflow()
        airflow.fail_with = AirflowUnavailable("down")
        once = _once(airflow)
        waiting = [asyncio.ensure_future(once.trigger("d", "r", {})) for _ in range(3)]
        await asyncio.sleep(0.01)
        airflow.release.set()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        airflow.fail_with = None
        again = await once.trigger("d", "r", {})
        return airflow, outcomes, again

    airflow, outcomes, again = asyncio.run(scenario())
    assert all(isinstance(o, AirflowUnavailable) for o in outcomes)
    assert again.created is True and len(airflow.calls) == 2


def test_a_caller_that_goes_away_does_not_cancel_the_trigger_others_wait_for():
    async def scenario():
        airflow = SlowAirflow()
        once = _once(airflow)
        first = asyncio.ensure_future(once.trigger("d", "r", {}))
        second = asyncio.ensure_future(once.trigger("d", "r", {}))
        await asyncio.sleep(0.01)
        first.cancel()
        airflow.release.set()
        return airflow, await second, await once.trigger("d", "r", {})

    airflow, second, third = asyncio.run(scenario())
    assert second.created is False and third.created is False
    assert airflow.runs == {"r"} and len(airflow.calls) == 1


def test_the_memory_holds_at_most_max_entries():
    airflow = RecordingAirflow()
    once = _once(airflow, max_entries=3)

    async def scenario():
        for run_id in ("a", "b", "c", "d", "a"):  # "a" was evicted by "d": asked again
            await once.trigger("x", run_id, {})

    asyncio.run(scenario())
    assert [call[1] for call in airflow.calls] == ["a", "b", "c", "d", "a"]
    assert len(once._done) == 3
