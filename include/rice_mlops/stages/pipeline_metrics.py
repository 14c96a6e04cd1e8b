"""What Airflow's own record says of the pipeline, for Prometheus (`GET /rice/metrics` on the
API server): when each of this project's DAGs last succeeded and last failed, how long the
oldest task has waited in each queue, and the drift the release zone's monitoring raised.

Read from the metadata database at scrape time (the API server's session), so an alert on
"no successful run in 26 hours" fires even when nothing runs at all: a push from a task
would go quiet exactly when the scheduler or a worker is gone. Airflow 3.3's own metrics
(StatsD or OpenTelemetry) cannot reach Debian's Prometheus 2.42 here (docs/monitoring.md).

Bounded: the facts are read at most once per `CACHE_SECONDS` whatever the scrape rate (one
reader at a time; the others get the cached answer), a fixed set of DAGs, at most
`MAX_QUEUES` queues, and drift p-values only of the monitoring's own `rice_drift` events.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from rice_mlops.core.vocabulary import DAG_ID, MONITORING_DAG_ID, ROLLBACK_DAG_ID

PIPELINE_DAG_IDS = (DAG_ID, MONITORING_DAG_ID, ROLLBACK_DAG_ID)
CACHE_SECONDS = 10.0
MAX_QUEUES = 20
MAX_CHECKS = 20


@dataclass(frozen=True)
class PipelineFacts:
    """Seconds since the epoch, None where there is none."""

    last_success: Mapping[str, float | None] = field(default_factory=dict)
    last_failure: Mapping[str, float | None] = field(default_factory=dict)
    oldest_queued: Mapping[str, float] = field(default_factory=dict)  # queue -> queued since
    drift_events: int = 0
    last_drift: float | None = None
    drift_p_values: Mapping[str, float] = field(default_factory=dict)  # check -> adjusted p


def exposition(facts: PipelineFacts, now: float) -> bytes:
    """The facts in Prometheus's text format; a DAG that never succeeded has no sample (an
    alert uses `absent()` for that), so a fresh stack is not 56 years late."""
    registry = CollectorRegistry()
    success = Gauge("rice_pipeline_last_success_timestamp_seconds",
                    "End of the DAG's latest successful run", ["dag_id"], registry=registry)
    failure = Gauge("rice_pipeline_last_failure_timestamp_seconds",
                    "End of the DAG's latest failed run", ["dag_id"], registry=registry)
    waiting = Gauge("rice_airflow_oldest_queued_task_seconds",
                    "How long the oldest queued task of the queue has waited for a worker",
                    ["queue"], registry=registry)
    events = Gauge("rice_drift_events", "rice_drift events the monitoring raised (all time)",
                   registry=registry)
    p_values = Gauge("rice_drift_adjusted_p_value",
                     "Adjusted p-value of each check in the latest drift the monitoring raised",
                     ["check"], registry=registry)
    for dag_id in PIPELINE_DAG_IDS:
        if (value := facts.last_success.get(dag_id)) is not None:
            success.labels(dag_id).set(value)
        if (value := facts.last_failure.get(dag_id)) is not None:
            failure.labels(dag_id).set(value)
    for queue, since in sorted(facts.oldest_queued.items())[:MAX_QUEUES]:
        waiting.labels(queue).set(max(0.0, now - since))
    events.set(facts.drift_events)
    if facts.last_drift is not None:  # no sample before the first drift (not 1970)
        Gauge("rice_drift_last_event_timestamp_seconds", "When the monitoring last raised drift",
              registry=registry).set(facts.last_drift)
    for check, value in sorted(facts.drift_p_values.items())[:MAX_CHECKS]:
        if isinstance(value, int | float) and math.isfinite(value):
            p_values.labels(check[:64]).set(value)
    return generate_latest(registry)


class CachedExposition:
    """`read()` gives the exposition of `facts()`, read again only after `ttl` seconds; a
    failing read keeps serving nothing rather than a stale claim (the scrape fails, `up` is 0)."""

    def __init__(self, facts: Callable[[], PipelineFacts], ttl: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.time):
        self._facts, self._ttl, self._clock = facts, ttl, clock
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._read_at = -math.inf

    def read(self) -> bytes:
        with self._lock:
            now = self._clock()
            if self._body is None or now - self._read_at >= self._ttl:
                self._body = None
                self._body = exposition(self._facts(), now)
                self._read_at = now
            return self._body


def read_facts() -> PipelineFacts:
    """The facts from Airflow's metadata database (the API server's own session)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    from rice_mlops.stages.assets import DRIFT_SOURCE, RICE_DRIFT

    def ends(state: str) -> dict[str, float | None]:
        rows = session.execute(
            select(DagRun.dag_id, func.max(DagRun.end_date))
            .where(DagRun.dag_id.in_(PIPELINE_DAG_IDS), DagRun.state == state)
            .group_by(DagRun.dag_id)).all()
        return {dag_id: end.timestamp() for dag_id, end in rows if end is not None}

    with create_session() as session:
        queued = session.execute(
            select(TaskInstance.queue, func.min(TaskInstance.queued_dttm))
            .where(TaskInstance.state == "queued", TaskInstance.queued_dttm.is_not(None))
            .group_by(TaskInstance.queue).limit(MAX_QUEUES)).all()
        raised = (select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                  .where(AssetModel.uri == RICE_DRIFT.uri,
                         AssetEvent.source_dag_id == DRIFT_SOURCE[0],
                         AssetEvent.source_task_id == DRIFT_SOURCE[1]))
        count = session.scalar(select(func.count()).select_from(raised.subquery())) or 0
        latest = session.scalars(raised.order_by(AssetEvent.timestamp.desc()).limit(1)).first()
        return PipelineFacts(
            last_success=ends("success"), last_failure=ends("failed"),
            oldest_queued={queue: since.timestamp() for queue, since in queued if queue},
            drift_events=int(count),
            last_drift=latest.timestamp.timestamp() if latest is not None else None,
            drift_p_values=p_values_of(latest.extra if latest is not None else None))


def p_values_of(extra) -> dict[str, float]:
    """check name -> adjusted p from a `rice_drift` event's extra (the monitoring's evidence);
    anything else in it is ignored."""
    checks = extra.get("checks") if isinstance(extra, dict) else None
    found: dict[str, float] = {}
    for check in checks if isinstance(checks, list) else ():
        if not isinstance(check, dict):
            continue
        name, value = check.get("name"), check.get("adjusted_p")
        if isinstance(name, str) and isinstance(value, int | float) and not isinstance(value,
                                                                                    bool):
            found[name] = float(value)
    return dict(list(found.items())[:MAX_CHECKS])


def create_app(source: CachedExposition | None = None):
    """The FastAPI app the plugin mounts at /rice: `GET /metrics`."""
    from fastapi import FastAPI, Response
    from prometheus_client import CONTENT_TYPE_LATEST

    cached = source or CachedExposition(read_facts)
    app = FastAPI(title="rice-mlops pipeline metrics", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(cached.read(), media_type=CONTENT_TYPE_LATEST)

    return app
