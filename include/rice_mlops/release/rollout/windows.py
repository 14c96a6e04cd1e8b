"""Where a canary step's numbers come from: two sources, one decision (`verdicts.canary_verdict`).

- `DirectMetrics`: each server's own `/metrics`, scraped before and after the window (where
  there is no Prometheus: `make demo`, a worker set up by hand).
- `PrometheusMetrics`: PromQL over the window, as Flagger asks it: the slot's answers by status
  and its p99 (`histogram_quantile` of the latency buckets), read once Prometheus has scraped
  past the window's end. The counters are taken as the difference of the last sample and the
  one before the window (`x - x offset <window>`), not `increase()`, whose extrapolation to
  the range's edges would count answers that never happened; so both sources give the same
  numbers from the same counters. A slot Prometheus cannot scrape (`up` not 1) and a counter
  that went down (a restarted server) are errors, not a quiet window.

Either gives a `Window` per slot (requests, 5xx, p99). The query text is built from the
slot names of the rollout (constants), never from anything a server or Prometheus says; the
answers are bounded in size and parsed as JSON.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from rice_mlops.release.rollout.state import SLOTS
from rice_mlops.release.rollout.verdicts import (
    PREDICTION_ENDPOINTS,
    MetricsError,
    Scrape,
    Window,
    quantile,
    window,
)

MAX_ANSWER_BYTES = 256 * 1024
_ENDPOINTS = "|".join(PREDICTION_ENDPOINTS)


class WindowSource(Protocol):
    def begin(self, slots: Sequence[str]) -> object:
        """Mark the window's start."""

    def end(self, mark: object, slots: Sequence[str]) -> dict[str, Window]:
        """Each slot's window from `mark` to now."""


class DirectMetrics:
    """The servers' own `/metrics`: `scrape(slot)` before and after."""

    name = "the servers' /metrics"

    def __init__(self, scrape: Callable[[str], Scrape]):
        self._scrape = scrape

    def begin(self, slots: Sequence[str]) -> dict[str, Scrape]:
        return {slot: self._scrape(slot) for slot in slots}

    def end(self, mark: Mapping[str, Scrape], slots: Sequence[str]) -> dict[str, Window]:
        return {slot: window(mark[slot], self._scrape(slot)) for slot in slots}


@dataclass(frozen=True)
class PrometheusMetrics:
    """PromQL against `url` (basic auth `auth`), whose scrape interval is `scrape_seconds`."""

    url: str
    auth: tuple[str, str] | None = None
    scrape_seconds: float = 5.0
    timeout: float = 10.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    name = "Prometheus"

    def begin(self, slots: Sequence[str]) -> float:
        # Back by one scrape: the range then holds a sample from before the window's traffic.
        return self.clock() - self.scrape_seconds

    def end(self, mark: float, slots: Sequence[str]) -> dict[str, Window]:
        # One scrape interval and a second of slack: a sample after the window's last answer.
        self.sleep(self.scrape_seconds + 1)
        at = self.clock()
        span = f"{max(1, math.ceil(at - mark))}s"
        with httpx.Client(base_url=self.url, auth=self.auth, timeout=self.timeout) as client:
            return {slot: self._window(client, slot, span, at) for slot in slots}

    def _window(self, client: httpx.Client, slot: str, span: str, at: float) -> Window:
        if slot not in SLOTS:
            raise ValueError(f"unknown slot {slot!r}")
        up = self._vector(client, f'up{{job="rice-serving",slot="{slot}"}}', at)
        if not up or up[0][1] != 1:
            raise MetricsError(f"Prometheus does not scrape the {slot} slot (up is "
                               f"{up[0][1] if up else 'absent'}): see its Targets page")
        selector = f'slot="{slot}",endpoint=~"{_ENDPOINTS}"'
        answers = dict(self._difference(client, "rice_serving_requests_total", selector,
                                        "status", span, at))
        buckets = self._difference(client, "rice_serving_request_duration_seconds_bucket",
                                   selector, "le", span, at)
        if any(value < 0 for value in (*answers.values(), *(v for _, v in buckets))):
            raise MetricsError(f"a counter of the {slot} slot went down in the window: the "
                               "server restarted")
        cumulative = {float(bound): value for bound, value in buckets}
        return Window(requests=round(sum(answers.values())),
                      errors=round(sum(v for status, v in answers.items()
                                       if status.startswith("5"))),
                      p99_seconds=quantile(0.99, cumulative))

    def _difference(self, client: httpx.Client, metric: str, selector: str, by: str,
                    span: str, at: float) -> list[tuple[str, float]]:
        """`metric` summed by `by`, now less `span` ago; a label value that appeared in the
        window (a first 5xx) counts from zero."""
        now = f"sum by ({by}) ({metric}{{{selector}}})"
        query = f"({now} - sum by ({by}) ({metric}{{{selector}}} offset {span})) or {now}"
        return [(labels.get(by, ""), value) for labels, value in
                self._vector(client, query, at)]

    def _vector(self, client: httpx.Client, query: str, at: float
                ) -> list[tuple[dict[str, str], float]]:
        """An instant query's samples: (labels, value); a failed or odd answer is a
        MetricsError naming what was wrong."""
        try:
            answer = client.get("/api/v1/query", params={"query": query, "time": f"{at:.3f}"})
        except httpx.HTTPError as exc:
            raise MetricsError(f"Prometheus at {self.url} did not answer: "
                               f"{type(exc).__name__}") from None
        if answer.status_code in (401, 403):
            raise MetricsError(f"Prometheus at {self.url} refused the login "
                               f"({answer.status_code}): check the connection's login and "
                               "password")
        if len(answer.content) > MAX_ANSWER_BYTES:
            raise MetricsError(f"Prometheus answered more than {MAX_ANSWER_BYTES} bytes")
        try:
            body = json.loads(answer.content)
            if answer.status_code != 200 or body.get("status") != "success":
                raise MetricsError(f"Prometheus refused the query ({answer.status_code}): "
                                   f"{str(body.get('error', ''))[:200]}")
            data = body["data"]
            if data["resultType"] != "vector":
                raise MetricsError(f"Prometheus answered a {data['resultType']}, not a vector")
            return [(dict(sample["metric"]), float(sample["value"][1]))
                    for sample in data["result"]]
        except MetricsError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            raise MetricsError("Prometheus's answer is not its query API's JSON") from None
