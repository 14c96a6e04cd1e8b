"""Prometheus metrics of one server: requests, latency, predictions, the model served.

A registry per server (not prometheus_client's global one), so tests can run several.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

# Latency from well under a millisecond (/ping) to a slow 2048x2048 upload.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self, metadata: dict, classes: list[str], endpoints: list[str]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("rice_serving_requests", "HTTP requests answered",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("rice_serving_request_duration_seconds",
                                 "Time from the request's headers to the end of the answer",
                                 ["endpoint"], buckets=_BUCKETS, registry=self.registry)
        self.predictions = Counter("rice_serving_predictions", "Images classified, by class",
                                   ["class"], registry=self.registry)
        self.in_flight = Gauge("rice_serving_requests_in_flight",
                               "Requests admitted and not answered yet", registry=self.registry)
        self.log_dropped = Counter("rice_serving_prediction_log_dropped",
                                   "Prediction log records dropped (queue full or write "
                                   "failed); the predictions themselves were answered",
                                   registry=self.registry)
        self.labelling_sampled = Counter("rice_serving_labelling_sampled",
                                         "Images written to the labelling queue",
                                         registry=self.registry)
        self.labelling_dropped = Counter("rice_serving_labelling_dropped",
                                         "Sampled images not kept (queue at its cap, writer "
                                         "behind, body too large or a failed write)",
                                         registry=self.registry)
        Info("rice_serving_model", "The model this server answers with",
             registry=self.registry).info({
                 key: str(metadata.get(key) or "unknown")
                 for key in ("model_name", "model_version", "run_id", "source_commit")})
        # Every label value exists from the start: a rate over a series that appears late is
        # wrong, and a scrape right after start-up shows what will be counted.
        for name in classes:
            self.predictions.labels(name)
        for endpoint in endpoints:
            self.latency.labels(endpoint)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def predicted(self, classes: list[str]) -> None:
        for name in classes:
            self.predictions.labels(name).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
