"""The webhook's REST client: how many dagRun POSTs it lets into the API server at once."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from rice_mlops.webhook.airflow_client import AirflowClient, AirflowUnavailable

pytestmark = pytest.mark.anyio


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


def client_for(api: ApiDouble, at_once: int) -> AirflowClient:
    client = AirflowClient("http://airflow.test", "webhook", "pw", triggers_at_once=at_once)
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(api.handle))
    return client


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


async def test_a_failing_api_server_frees_the_slot_for_the_next_push():
    api = ApiDouble(status=503)
    client = client_for(api, 1)
    for run in ("push_a", "push_b"):
        with pytest.raises(AirflowUnavailable):
            await client.trigger("dag", run, {})
    api.status = 200
    assert (await asyncio.wait_for(client.trigger("dag", "push_c", {}), 5)).created
