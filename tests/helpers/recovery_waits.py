"""Waiting for the compose stack to recover from a fault: an address answering again,
Airflow's components healthy, every service healthy, and recoveries timed in the
background while the driver goes on to the next fault."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from tests.helpers.compose_project import ComposeStack
from tests.helpers.timestamps import parse_time


def wait_http(url: str, timeout: float = 300, auth=None) -> None:
    """Until `url` answers anything but a refused connection or a 5xx."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5, auth=auth).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def wait_airflow_health(stack: ComposeStack, component: str, since: float,
                        timeout: float = 300) -> None:
    """Until the API server's health answer says `component` is healthy (for the scheduler,
    DAG processor and triggerer: with a heartbeat later than `since`, epoch seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{stack.airflow}/api/v2/monitor/health", timeout=5).json()
            part = health.get(component) or {}
            beat = next((v for k, v in part.items() if k.startswith("latest_")), None)
            if part.get("status") == "healthy" and (component == "metadatabase"
                                                    or (parse_time(beat) or 0) > since):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"Airflow's {component} not healthy within {timeout:.0f}s")


class Background:
    """Measure recoveries while the driver goes on to the next fault."""

    def __init__(self):
        self.threads: list[threading.Thread] = []

    def measure(self, record: dict, key: str, wait: Callable[[], object],
                since: float) -> None:
        """record[key] = seconds from `since` (time.monotonic()) until `wait` returns."""
        def run():
            try:
                wait()
                record[key] = round(time.monotonic() - since, 1)
            except Exception as exc:  # noqa: BLE001 - the test reports what went wrong
                record.setdefault("errors", []).append(f"{key}: {exc}")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def unhealthy(stack: ComposeStack, timeout: float = 300) -> dict[str, str]:
    """Services not healthy (one-shots aside) after waiting up to `timeout`, the remote
    worker's included."""
    found = stack.wait_healthy(timeout=timeout)
    if stack.remote is not None:
        found.update(stack.remote.wait_healthy(timeout=timeout))
    return found
