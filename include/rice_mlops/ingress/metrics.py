"""What the receiver answered, counted for Prometheus (`GET /webhooks/metrics`).

A registry per app (not prometheus_client's global one), so tests can build several. The
labels are bounded: the answer's outcome and status, and for a refusal one of a fixed set of
kinds, never the reason's text, a repository or a delivery id (an unsigned caller chooses
those). The API server runs one process by default (`[api] workers`); with more, each keeps
its own counts and a scrape reads one of them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

OUTCOMES = ("triggered", "duplicate", "ignored", "refused", "unavailable")
# Why a delivery was refused: what a GitHub webhook's settings or a sender got wrong.
KINDS = ("none", "secret", "body", "signature", "headers", "content_type", "payload",
         "repository", "airflow")


class DeliveryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._answers = Counter(
            "rice_webhook_deliveries", "Webhook deliveries by what the receiver answered",
            ["outcome", "status", "kind"], registry=self.registry)

    def count(self, outcome: str, status: int, kind: str = "none") -> None:
        if outcome not in OUTCOMES or kind not in KINDS:
            raise ValueError(f"unknown outcome {outcome!r} or kind {kind!r}")
        self._answers.labels(outcome, str(status), kind).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
