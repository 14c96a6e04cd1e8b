"""Trigger DAG runs through Airflow's REST API with a cached service-account token."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass

import httpx

from rice_mlops.webhook.settings import TRIGGERS_AT_ONCE

_REFRESH_MARGIN_SECONDS = 300


class AirflowUnavailable(RuntimeError):
    """The API could not be reached or answered 5xx: the delivery should be redelivered."""


class AirflowRejected(RuntimeError):
    """The API refused the request with a 4xx other than a duplicate."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class TriggerResult:
    dag_run_id: str
    created: bool  # False: the run already existed (a redelivery)
    state: str | None = None


def _expiry(token: str) -> float:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, ValueError):
        return time.time() + 600  # unknown lifetime: ask again in ten minutes


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str, *,
                 triggers_at_once: int = TRIGGERS_AT_ONCE, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._timeout = timeout
        self._token: str | None = None
        self._token_expiry = 0.0
        self._token_lock = asyncio.Lock()
        # A burst of new pushes waits here rather than in the API server's threads, where it
        # would slow every request, these included (TRIGGERS_AT_ONCE says why two).
        self._trigger_slots = asyncio.Semaphore(triggers_at_once)
        self._http: httpx.AsyncClient | None = None
        self.token_requests = 0

    def _client(self) -> httpx.AsyncClient:
        # One pooled client for the server's life: keep-alive connections to the API instead
        # of a new TCP connection per delivery. Created on first use, inside the serving loop.
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        return self._http

    async def _token_value(self, client: httpx.AsyncClient, force: bool = False) -> str:
        async with self._token_lock:
            if force or not self._token or time.time() > self._token_expiry - \
                    _REFRESH_MARGIN_SECONDS:
                response = await client.post(f"{self.base_url}/auth/token",
                                             json=self._credentials)
                if response.status_code >= 500:
                    raise AirflowUnavailable(f"/auth/token answered {response.status_code}")
                if response.status_code not in (200, 201):
                    raise AirflowRejected(response.status_code,
                                          "the webhook's service account was refused by "
                                          "/auth/token; check AIRFLOW_WEBHOOK_USERNAME/PASSWORD")
                self._token = response.json()["access_token"]
                self._token_expiry = _expiry(self._token)
                self.token_requests += 1
            return self._token

    async def trigger(self, dag_id: str, run_id: str, conf: dict) -> TriggerResult:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        url = f"{self.base_url}/api/v2/dags/{dag_id}/dagRuns"
        client = self._client()
        try:
            for attempt in range(2):
                token = await self._token_value(client, force=attempt > 0)
                headers = {"Authorization": f"Bearer {token}"}
                async with self._trigger_slots:
                    response = await client.post(url, json=body, headers=headers)
                if response.status_code != 401:
                    break
        except httpx.HTTPError as exc:
            raise AirflowUnavailable(f"Airflow API unreachable: {exc.__class__.__name__}") \
                from None
        if response.status_code == 200:
            return TriggerResult(run_id, True, response.json().get("state"))
        if response.status_code == 409:
            return TriggerResult(run_id, False)
        if response.status_code >= 500:
            raise AirflowUnavailable(f"Airflow API answered {response.status_code}")
        raise AirflowRejected(response.status_code, response.text[:500])
