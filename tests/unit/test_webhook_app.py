"""The webhook application in-process, with a recording Airflow client instead of the API."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient

from rice_mlops.webhook.airflow_client import AirflowRejected, AirflowUnavailable, TriggerResult
from rice_mlops.webhook.app import Settings, create_app
from rice_mlops.webhook.signature import sign

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
    settings = Settings(secret=SECRET, branch="main", repositories=frozenset({"acme/rice"}),
                        dag_id="rice_classifier_cicd", api_url="http://unused", username="u",
                        password="p", serialize=False)
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


@pytest.mark.parametrize(("error", "status"), [
    (AirflowUnavailable("connection refused"), 503),
    (AirflowRejected(400, "min_test_accuracy too low"), 422),
])
def test_airflow_failures_map_to_what_github_should_do(client, airflow, error, status):
    airflow.fail_with = error
    response = _post(client, _push())
    assert response.status_code == status, response.text
