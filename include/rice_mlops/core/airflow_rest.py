"""The one client of Airflow's REST API (`/api/v2`): the pipeline's tasks (run notes, the
newer-push check, the release zone's approval check), the demo, and, asynchronously, the
webhook receiver's triggers.

Each caller logs in with an account of its own (`POST /auth/token`) and the token is kept until
shortly before it expires, then fetched again; a 401 (the API server restarted with another
key, say) fetches it once more. An unreachable server or a 5xx is `AirflowUnavailable` (try
again later), any other refusal `AirflowRejected` with the status and Airflow's answer, which
callers log and never hand to a caller of theirs. One pooled httpx client per instance.

Why not the official `apache-airflow-client` (3.3.2, matching the server): it is generated and
synchronous (urllib3, a thread pool per ApiClient), while the webhook answers from the API
server's event loop, must bound the triggers it has in flight and hold one connection pool;
two clients would be three again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx

REFRESH_MARGIN_SECONDS = 300  # fetch a new token this long before the old one expires


class AirflowUnavailable(RuntimeError):
    """The API could not be reached or answered 5xx: worth trying again later."""


class AirflowRejected(RuntimeError):
    """The API refused the request with a 4xx (a duplicate run is not a refusal)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class TriggerResult:
    dag_run_id: str
    created: bool  # False: the run already existed (a redelivery)
    state: str | None = None


def token_expiry(token: str) -> float:
    """The token's `exp` claim (read, not verified: the server verifies it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, ValueError):
        return time.time() + 600  # unknown lifetime: ask again in ten minutes


class _Login:
    """An account's credentials and its current token; what both clients share."""

    def __init__(self, base_url: str, username: str, password: str):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._credentials = {"username": username, "password": password}
        self.token: str | None = None
        self.expiry = 0.0
        self.requests = 0  # tokens fetched (tests read it)

    def stale(self, force: bool) -> bool:
        return force or not self.token or time.time() > self.expiry - REFRESH_MARGIN_SECONDS

    def request_args(self) -> tuple[str, dict]:
        return f"{self.base_url}/auth/token", {"json": self._credentials}

    def store(self, response: httpx.Response) -> str:
        if response.status_code >= 500:
            raise AirflowUnavailable(f"/auth/token answered {response.status_code}")
        if response.status_code not in (200, 201):
            raise AirflowRejected(response.status_code,
                                  f"the account {self.username!r} was refused by /auth/token: "
                                  "check its user name and password")
        self.token = response.json()["access_token"]
        self.expiry = token_expiry(self.token)
        self.requests += 1
        return self.token


def _checked(response: httpx.Response, ok: Iterable[int], what: str) -> httpx.Response:
    if response.status_code in ok:
        return response
    if response.status_code >= 500:
        raise AirflowUnavailable(f"{what}: Airflow API answered {response.status_code}")
    raise AirflowRejected(response.status_code, f"{what}: {response.text[:500]}")


def _unreachable(exc: httpx.HTTPError) -> AirflowUnavailable:
    return AirflowUnavailable(f"Airflow API unreachable: {exc.__class__.__name__}")


class AirflowRest:
    """Synchronous: a task's or a tool's calls, one after another."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 15.0):
        self._login = _Login(base_url, username, password)
        self._http = httpx.Client(timeout=timeout)

    def _token(self, force: bool = False) -> str:
        if self._login.stale(force):
            url, kwargs = self._login.request_args()
            try:
                return self._login.store(self._http.post(url, **kwargs))
            except httpx.HTTPError as exc:
                raise _unreachable(exc) from None
        return self._login.token

    def request(self, method: str, path: str, *, ok: Iterable[int] = (200,),
                **kwargs) -> httpx.Response:
        """`method` on `/api/v2{path}`; the answer when its status is in `ok`."""
        url = f"{self._login.base_url}/api/v2{path}"
        try:
            for attempt in range(2):
                headers = {"Authorization": f"Bearer {self._token(force=attempt > 0)}"}
                response = self._http.request(method, url, headers=headers, **kwargs)
                if response.status_code != 401:
                    break
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        return _checked(response, tuple(ok), f"{method} {path}")

    def get(self, path: str, **params) -> dict:
        return self.request("GET", path, params=params).json()

    def patch(self, path: str, body: dict, **params) -> dict:
        return self.request("PATCH", path, json=body, params=params).json()

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")

    def recent_runs(self, dag_id: str, limit: int = 100) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns", limit=limit,
                        order_by="-run_after")["dag_runs"]

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> dict | None:
        """The task's human-in-the-loop detail, or None when it asked nobody (404)."""
        response = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                                       f"{task_id}/-1/hitlDetails", ok=(200, 404))
        return None if response.status_code == 404 else response.json()

    def set_note(self, dag_id: str, run_id: str, note: str) -> None:
        self.patch(f"/dags/{dag_id}/dagRuns/{run_id}", {"note": note[:1000]},
                   update_mask="note")

    def put_connection(self, connection: dict) -> None:
        """Create or replace a connection."""
        created = self.request("POST", "/connections", ok=(200, 201, 409), json=connection)
        if created.status_code == 409:
            self.patch(f"/connections/{connection['connection_id']}", connection)

    def xcom_entry(self, dag_id: str, run_id: str, task_id: str,
                   key: str = "return_value") -> dict | None:
        """The XCom entry as the API answers it, or None when the task pushed none."""
        response = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                                       f"{task_id}/xcomEntries/{key}", ok=(200, 404))
        return None if response.status_code == 404 else response.json()


class AsyncAirflowRest:
    """Asynchronous, for the webhook receiver: one pooled client for the server's life, and
    at most `triggers_at_once` triggers in flight (a burst waits here, not in the API server's
    threads, where it would slow every request, these included;
    rice_mlops.ingress.settings.TRIGGERS_AT_ONCE says how many)."""

    def __init__(self, base_url: str, username: str, password: str, *,
                 triggers_at_once: int, timeout: float = 5.0):
        self._login = _Login(base_url, username, password)
        self.base_url = self._login.base_url
        self._timeout = timeout
        self._token_lock = asyncio.Lock()
        self._trigger_slots = asyncio.Semaphore(triggers_at_once)
        self._http: httpx.AsyncClient | None = None

    @property
    def token_requests(self) -> int:
        return self._login.requests

    def _client(self) -> httpx.AsyncClient:
        # Created on first use, inside the serving loop.
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        return self._http

    async def _token(self, force: bool = False) -> str:
        async with self._token_lock:
            if self._login.stale(force):
                url, kwargs = self._login.request_args()
                return self._login.store(await self._client().post(url, **kwargs))
            return self._login.token

    async def trigger(self, dag_id: str, run_id: str, conf: Mapping) -> TriggerResult:
        """POST a run with this id and conf; an existing run (409) is not an error."""
        body = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf)}
        url = f"{self.base_url}/api/v2/dags/{dag_id}/dagRuns"
        try:
            for attempt in range(2):
                headers = {"Authorization": f"Bearer {await self._token(force=attempt > 0)}"}
                async with self._trigger_slots:
                    response = await self._client().post(url, json=body, headers=headers)
                if response.status_code != 401:
                    break
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        if response.status_code == 409:
            return TriggerResult(run_id, False)
        _checked(response, (200,), f"POST /dags/{dag_id}/dagRuns")
        return TriggerResult(run_id, True, response.json().get("state"))
