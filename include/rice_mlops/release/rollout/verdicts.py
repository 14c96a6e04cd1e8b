"""Each rollout stage decided on measured numbers, never on what a server says of itself.

- The shadow stage joins the stable and candidate servers' prediction logs on the request id
  the proxy gave both (`proxy_config`), and asks for enough joined requests, agreement at or
  above a floor, no 5xx from the candidate and its p99 within the latency budget.
- A canary step reads both servers' `/metrics` before and after a window (prometheus_client's
  own parser) and asks the candidate for an error rate and a p99 within budget.

p99 comes from the latency histogram's bucket counts, interpolated within the bucket the way
Prometheus's `histogram_quantile` does, so it is as fine as the buckets (5, 10, 25, 50 ms ...).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from rice_mlops.monitoring.log_reader import MAX_LINE as MAX_LOG_LINE

# The endpoints whose answers are predictions; /ping and /metrics say nothing of the model.
PREDICTION_ENDPOINTS = ("/predict", "/invocations")
MAX_METRICS_BYTES = 1024 * 1024


class MetricsError(ValueError):
    """A `/metrics` answer that is not the serving server's exposition."""


@dataclass(frozen=True)
class Budgets:
    min_requests: int = 50
    min_agreement: float = 0.98
    max_p99_ms: float = 250.0
    max_error_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.min_requests < 1:
            raise ValueError("min_requests must be at least 1")
        if not 0 <= self.min_agreement <= 1 or not 0 <= self.max_error_rate <= 1:
            raise ValueError("min_agreement and max_error_rate are fractions from 0 to 1")
        if not self.max_p99_ms > 0:
            raise ValueError("max_p99_ms must be above 0")


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    numbers: Mapping[str, float | int | None]


# --- /metrics ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scrape:
    """Counters of one server at one moment: answers by status, and the latency histogram's
    cumulative bucket counts (upper bound in seconds -> count), over the prediction endpoints."""

    answers: Mapping[int, float]
    buckets: Mapping[float, float]


def parse_scrape(text: str) -> Scrape:
    if len(text) > MAX_METRICS_BYTES:
        raise MetricsError(f"a /metrics answer over {MAX_METRICS_BYTES} bytes")
    answers: dict[int, float] = {}
    buckets: dict[float, float] = {}
    seen = set()
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                endpoint = sample.labels.get("endpoint")
                if endpoint not in PREDICTION_ENDPOINTS:
                    continue
                if sample.name == "rice_serving_requests_total":
                    seen.add("requests")
                    status = int(sample.labels["status"])
                    answers[status] = answers.get(status, 0.0) + sample.value
                elif sample.name == "rice_serving_request_duration_seconds_bucket":
                    seen.add("latency")
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    except (ValueError, KeyError, TypeError) as exc:
        raise MetricsError(f"not a Prometheus exposition: {exc}") from None
    if "latency" not in seen:
        raise MetricsError("no rice_serving_request_duration_seconds histogram for "
                           f"{'/'.join(PREDICTION_ENDPOINTS)}: not a rice serving server")
    return Scrape(answers=answers, buckets=buckets)


@dataclass(frozen=True)
class Window:
    """What one server answered between two scrapes."""

    requests: int
    errors: int  # 5xx
    p99_seconds: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def window(before: Scrape, after: Scrape) -> Window:
    """The difference of two scrapes; a counter that went down means the server restarted in
    between, and that window is refused (its numbers would be a lie)."""
    answered = {status: after.answers.get(status, 0.0) - before.answers.get(status, 0.0)
                for status in after.answers}
    deltas = {bound: after.buckets[bound] - before.buckets.get(bound, 0.0)
              for bound in after.buckets}
    if any(value < 0 for value in (*answered.values(), *deltas.values())) or \
            set(before.answers) - set(after.answers):
        raise MetricsError("a counter went down between the scrapes: the server restarted")
    return Window(requests=int(sum(answered.values())),
                  errors=int(sum(v for status, v in answered.items() if status >= 500)),
                  p99_seconds=quantile(0.99, deltas))


def quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative bucket counts; None without data."""
    bounds = sorted(cumulative)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = cumulative[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):  # beyond the largest finite bucket: that bucket's bound
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count -
                                                                                  lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _ms(seconds: float | None) -> str:
    return "no data" if seconds is None else f"{seconds * 1000:.0f} ms"


def canary_verdict(candidate: Window, stable: Window | None, budgets: Budgets,
                   percent: int) -> Verdict:
    """A canary step: the candidate's own error rate and p99 within budget; the stable side's
    numbers are reported beside them, so a slow host is told from a slow model."""
    numbers = {"percent": percent, "candidate_requests": candidate.requests,
               "candidate_errors": candidate.errors,
               "candidate_p99_ms": _round_ms(candidate.p99_seconds),
               "stable_requests": stable.requests if stable else None,
               "stable_p99_ms": _round_ms(stable.p99_seconds) if stable else None}
    needed = step_minimum(budgets, percent)
    if candidate.requests < needed:
        return Verdict(False, f"at {percent} %: the candidate answered {candidate.requests} "
                       f"requests in the window, fewer than the {needed} this step needs",
                       numbers)
    if candidate.error_rate > budgets.max_error_rate:
        return Verdict(False, f"at {percent} %: {candidate.errors} of {candidate.requests} "
                       f"answers were 5xx (budget {budgets.max_error_rate:.1%})", numbers)
    p99 = candidate.p99_seconds
    if over := _over_p99(p99, budgets):
        return Verdict(False, f"at {percent} %: {over}", numbers)
    return Verdict(True, f"at {percent} %: {candidate.requests} answers, 0 over budget, p99 "
                   f"{_ms(p99)}", numbers)


def step_minimum(budgets: Budgets, percent: int) -> int:
    """The answers a canary step must measure: its share of `min_requests`, at least one."""
    return max(1, math.ceil(budgets.min_requests * percent / 100))


def _over_p99(p99: float | None, budgets: Budgets) -> str | None:
    """Why a p99 breaks the latency budget, or None (no data is no breach: the request
    counts decide that)."""
    if p99 is not None and p99 * 1000 > budgets.max_p99_ms:
        return f"p99 {_ms(p99)} > {budgets.max_p99_ms:.0f} ms"
    return None


def _round_ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --- prediction logs --------------------------------------------------------------------------

def predictions_by_request(lines: Iterable[str | bytes]) -> dict[str, tuple[str, ...]]:
    """request id -> the predicted classes, from a server's prediction log (JSON lines);
    lines that are too long, not JSON or without an id and classes are skipped (the log is
    the server's, and a torn last line is normal while it writes)."""
    found: dict[str, tuple[str, ...]] = {}
    for line in lines:
        if len(line) > MAX_LOG_LINE:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        request_id, classes = record.get("request_id"), record.get("classes")
        if isinstance(request_id, str) and isinstance(classes, list) and \
                all(isinstance(name, str) for name in classes):
            found[request_id] = tuple(classes)
    return found


def shadow_verdict(stable: Mapping[str, tuple[str, ...]],
                   candidate: Mapping[str, tuple[str, ...]], candidate_window: Window,
                   budgets: Budgets) -> Verdict:
    """Agreement on the requests both answered, the candidate's 5xx and p99 while mirrored."""
    joined = stable.keys() & candidate.keys()
    agreed = sum(stable[key] == candidate[key] for key in joined)
    agreement = agreed / len(joined) if joined else 0.0
    numbers = {"joined": len(joined), "agreed": agreed, "agreement": round(agreement, 4),
               "candidate_requests": candidate_window.requests,
               "candidate_errors": candidate_window.errors,
               "candidate_p99_ms": _round_ms(candidate_window.p99_seconds)}
    if len(joined) < budgets.min_requests:
        return Verdict(False, f"shadow: {len(joined)} requests answered by both, fewer than "
                       f"{budgets.min_requests}", numbers)
    if candidate_window.errors:
        return Verdict(False, f"shadow: the candidate answered {candidate_window.errors} "
                       "mirrored requests with 5xx", numbers)
    if agreement < budgets.min_agreement:
        return Verdict(False, f"shadow: agreement {agreement:.1%} on {len(joined)} requests < "
                       f"{budgets.min_agreement:.1%}", numbers)
    p99 = candidate_window.p99_seconds
    if over := _over_p99(p99, budgets):
        return Verdict(False, f"shadow: {over}", numbers)
    return Verdict(True, f"shadow: agreement {agreement:.1%} on {len(joined)} requests, no "
                   f"5xx, p99 {_ms(p99)}", numbers)
