"""Reading an XCom through Airflow's REST API: the value decoded one way by both test clients
(tests/helpers/airflow_stack.py and the retrying one, tests/helpers/retrying_airflow.py), None
when the task pushed none."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers.airflow_stack import AirflowStack, xcom_value
from tests.helpers.retrying_airflow import Airflow

DIGEST_REF = "127.0.0.1:5000/rice-classifier@sha256:" + "ab" * 32
PATH = "/dags/rice_classifier_cicd/dagRuns/run-1/taskInstances/train/xcomEntries/return_value"


@pytest.mark.parametrize(("value", "expected"), [
    ({"run_id": "abc", "epochs": 2}, {"run_id": "abc", "epochs": 2}),  # stored as an object
    ('{"run_id": "abc", "epochs": 2}', {"run_id": "abc", "epochs": 2}),  # serialized first
    ('"a string"', "a string"),
    ("[1, 2]", [1, 2]),
    (DIGEST_REF, DIGEST_REF),  # a task's plain string: not JSON, kept as it is
    ("pushed\n" + DIGEST_REF, "pushed\n" + DIGEST_REF),
    (["a", 1], ["a", 1]),
    (3, 3),
], ids=["object", "json-text", "json-string", "json-list", "plain", "lines", "list", "number"])
def test_a_value_is_decoded_when_it_is_json_text(value, expected):
    assert xcom_value({"key": "return_value", "value": value}) == expected


def _answer(status: int, body: dict) -> httpx.Response:
    return httpx.Response(status, json=body)


@pytest.fixture(params=["stack", "retrying_airflow"])
def client(request, monkeypatch):
    """Each client with its HTTP call replaced by `client.answers[path]`; asked paths recorded."""
    if request.param == "stack":
        client = AirflowStack(home=Path("/nonexistent"), port=1)
        monkeypatch.setattr(client, "api", lambda method, path, **_: _reply(client, method, path))
    else:
        client = Airflow("http://127.0.0.1:1", "unused")
        monkeypatch.setattr(client, "request",
                            lambda method, path, **_: _reply(client, method, path))
    client.answers, client.asked = {}, []
    return client


def _reply(client, method: str, path: str) -> httpx.Response:
    client.asked.append((method, path))
    return client.answers[path]


def test_both_clients_decode_the_value(client):
    client.answers[PATH] = _answer(200, {"key": "return_value", "value": '{"run_id": "abc"}'})
    assert client.xcom("run-1", "train") == {"run_id": "abc"}
    assert client.asked == [("GET", PATH)]


def test_both_clients_answer_none_for_a_missing_xcom(client):
    client.answers[PATH] = _answer(404, {"detail": "XCom entry with key: `return_value` not found"})
    assert client.xcom("run-1", "train") is None


def test_another_key_is_asked_for_by_name(client):
    path = PATH.replace("return_value", "run_id")
    client.answers[path] = _answer(200, {"key": "run_id", "value": "abc"})
    assert client.xcom("run-1", "train", key="run_id") == "abc"


def test_a_typed_hand_off_comes_back_as_the_dict_of_its_fields():
    """What a task's XCom holds for a hand-off (Airflow's serde envelope, as the API answers it
    without `deserialize`) decodes to its fields, tuples as lists, nested or as JSON text."""
    import json

    from tests.helpers.airflow_stack import stored_xcom
    from tests.helpers.handoffs import trained

    value = trained("ab" * 16, artifact_sha256={"tflite/model.tflite": "0" * 64})
    stored = stored_xcom(value)
    assert stored["__classname__"] == "rice_mlops.core.handoffs.Trained"
    for answer in (stored, json.dumps(stored)):
        decoded = xcom_value({"key": "return_value", "value": answer})
        assert decoded == value.as_dict()
        assert decoded["run_id"] == "ab" * 16 and decoded["classes"] == ["Arborio", "Basmati"]
    # A tuple inside a plain value is unwrapped the same way.
    assert xcom_value({"value": stored_xcom({"pair": (1, 2)})}) == {"pair": [1, 2]}
