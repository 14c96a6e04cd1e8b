"""The one REST client of Airflow (rice_mlops.core.airflow_rest): how many dagRun POSTs the
webhook's asynchronous one lets into the API server at once, and how the synchronous one (the
tasks', the demo's) logs in, retries a 401 once and names what went wrong."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from rice_mlops.core.airflow_rest import (
    AirflowRejected,
    AirflowRest,
    AirflowUnavailable,
    AsyncAirflowRest,
)


class ApiDouble:
    """/auth/token and a dagRuns endpoint that takes a moment and counts callers inside it."""

    def __init__(self, status: int = 200):
        self.status = status
        self.inside = self.most_inside = 0
        self.posted: list[str] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "a.e30.c"})
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            await asyncio.sleep(0.02)
        finally:
            self.inside -= 1
        self.posted.append(json.loads(request.content)["dag_run_id"])
        return httpx.Response(self.status, json={"state": "queued"})


def client_for(api: ApiDouble, at_once: int) -> AsyncAirflowRest:
    client = AsyncAirflowRest("http://airflow.test", "webhook", "pw", triggers_at_once=at_once)
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(api.handle))
    return client


@pytest.mark.anyio
@pytest.mark.parametrize("at_once", [1, 2])
async def test_a_burst_of_pushes_enters_the_api_server_at_most_n_at_a_time(at_once):
    api = ApiDouble()
    client = client_for(api, at_once)
    runs = [f"push_{i}" for i in range(10)]
    results = await asyncio.gather(*(client.trigger("dag", run, {}) for run in runs))
    assert api.most_inside == at_once
    assert sorted(api.posted) == sorted(runs)  # each waited its turn; none was dropped
    assert all(result.created for result in results)
    assert client.token_requests == 1


@pytest.mark.anyio
async def test_a_failing_api_server_frees_the_slot_for_the_next_push():
    api = ApiDouble(status=503)
    client = client_for(api, 1)
    for run in ("push_a", "push_b"):
        with pytest.raises(AirflowUnavailable):
            await client.trigger("dag", run, {})
    api.status = 200
    assert (await asyncio.wait_for(client.trigger("dag", "push_c", {}), 5)).created


def _jwt(exp: float) -> str:
    import base64

    claims = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    return f"h.{claims}.s"


class SyncApi:
    """/auth/token and whatever `answers` says for each path, recording what was asked."""

    def __init__(self, answers: dict, lifetime: float = 3600):
        self.answers, self.lifetime = answers, lifetime
        self.logins = 0
        self.seen: list[tuple[str, str, str | None]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        import time

        if request.url.path == "/auth/token":
            self.logins += 1
            return httpx.Response(201, json={"access_token": _jwt(time.time() + self.lifetime)})
        self.seen.append((request.method, request.url.path, request.headers.get("authorization")))
        answer = self.answers[(request.method, request.url.path)]
        status, body = answer.pop(0) if isinstance(answer, list) else answer
        return httpx.Response(status, json=body)


def _sync(api: SyncApi) -> AirflowRest:
    client = AirflowRest("http://airflow.test/", "pipeline", "pw")
    client._http = httpx.Client(transport=httpx.MockTransport(api.handle))
    return client


RUN = "/api/v2/dags/d/dagRuns/r"


def test_one_login_serves_many_calls_and_a_401_logs_in_once_more():
    api = SyncApi({("GET", RUN): [(200, {"state": "running"}), (401, {}),
                                  (200, {"state": "success"})]})
    client = _sync(api)
    assert client.run("d", "r") == {"state": "running"}
    assert client.run("d", "r") == {"state": "success"}  # the 401 was answered by a login
    assert api.logins == 2 and len(api.seen) == 3
    assert all(auth.startswith("Bearer h.") for _, _, auth in api.seen)


def test_a_token_about_to_expire_is_fetched_again():
    api = SyncApi({("GET", RUN): (200, {})}, lifetime=60)  # inside the refresh margin
    client = _sync(api)
    client.run("d", "r")
    client.run("d", "r")
    assert api.logins == 2


@pytest.mark.parametrize(("status", "error"), [(503, AirflowUnavailable), (403, AirflowRejected)])
def test_refusals_are_named_by_kind(status, error):
    client = _sync(SyncApi({("PATCH", RUN): (status, {"detail": "nope"})}))
    with pytest.raises(error, match="PATCH /dags/d/dagRuns/r"):
        client.set_note("d", "r", "shipped v3")


def test_a_refused_login_names_the_account_and_no_password():
    def refuse(request):
        return httpx.Response(401, json={"detail": "invalid"})

    client = AirflowRest("http://airflow.test", "pipeline", "s3cret-pw")
    client._http = httpx.Client(transport=httpx.MockTransport(refuse))
    with pytest.raises(AirflowRejected) as refused:
        client.run("d", "r")
    assert "'pipeline'" in str(refused.value) and "s3cret-pw" not in str(refused.value)


def test_an_unreachable_server_is_unavailable():
    def down(request):
        raise httpx.ConnectError("refused")

    client = AirflowRest("http://airflow.test", "pipeline", "pw")
    client._http = httpx.Client(transport=httpx.MockTransport(down))
    with pytest.raises(AirflowUnavailable, match="unreachable"):
        client.recent_runs("d")


def test_missing_answers_are_none_and_a_connection_is_created_or_replaced():
    hitl = RUN + "/taskInstances/approve_release/-1/hitlDetails"
    api = SyncApi({("GET", hitl): (404, {}), ("POST", "/api/v2/connections"): (409, {}),
                   ("PATCH", "/api/v2/connections/c"): (200, {"connection_id": "c"})})
    client = _sync(api)
    assert client.hitl_detail("d", "r", "approve_release") is None
    client.put_connection({"connection_id": "c", "conn_type": "http"})
    assert [(m, p) for m, p, _ in api.seen][-2:] == [("POST", "/api/v2/connections"),
                                                     ("PATCH", "/api/v2/connections/c")]
