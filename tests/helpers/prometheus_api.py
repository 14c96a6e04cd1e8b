"""The compose stack's Prometheus as the tests read it: its published port, its login, and
instant queries (tests/integration/test_compose_prometheus.py, tests/chaos)."""

from __future__ import annotations

import time

import httpx


class Prometheus:
    def __init__(self, env: dict[str, str]):
        self.url = f"http://127.0.0.1:{env['PROMETHEUS_PORT']}"
        self.auth = (env.get("PROMETHEUS_USER", "prometheus"), env["PROMETHEUS_PASSWORD"])

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, auth=self.auth, timeout=30,
                         follow_redirects=True)

    def query(self, expression: str, at: float | None = None) -> list[dict]:
        params = {"query": expression} | ({"time": f"{at:.3f}"} if at else {})
        answer = self.get("/api/v1/query", **params)
        answer.raise_for_status()
        return answer.json()["data"]["result"]

    def wait_for(self, expression: str, timeout: float = 120) -> list[dict]:
        """The query's samples once it has any; [] after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = self.query(expression)
                if found:
                    return found
            except httpx.HTTPError:
                pass
            time.sleep(2)
        return []
