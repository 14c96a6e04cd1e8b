"""The pipeline's metrics for Prometheus (`/rice/metrics`, issue 38): what Airflow's record
says, in the exposition format, read at most once per cache period whatever the scrape rate,
and nothing an event's extra holds beyond bounded check names and finite p-values."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rice_mlops.stages import pipeline_metrics as pm


def _samples(body: bytes) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def test_the_exposition_says_when_each_dag_last_succeeded_and_failed():
    facts = pm.PipelineFacts(
        last_success={"rice_classifier_cicd": 1000.0, "rice_monitoring": None},
        last_failure={"rice_monitoring": 900.0, "someone_elses_dag": 5.0},
        oldest_queued={"docker": 1100.0, "default": 1190.0},
        drift_events=3, last_drift=1050.0,
        drift_p_values={"confidence": 0.001, "input mean_g": 0.2})
    samples = _samples(pm.exposition(facts, now=1200.0))
    assert samples[("rice_pipeline_last_success_timestamp_seconds",
                    (("dag_id", "rice_classifier_cicd"),))] == 1000.0
    assert samples[("rice_pipeline_last_failure_timestamp_seconds",
                    (("dag_id", "rice_monitoring"),))] == 900.0
    # Only this project's DAGs; a DAG that never succeeded has no sample at all.
    assert not [key for key in samples if ("dag_id", "someone_elses_dag") in key[1]]
    assert not [key for key in samples if key[0].endswith("success_timestamp_seconds")
                and ("dag_id", "rice_monitoring") in key[1]]
    assert samples[("rice_airflow_oldest_queued_task_seconds", (("queue", "docker"),))] == 100.0
    assert samples[("rice_drift_events", ())] == 3
    assert samples[("rice_drift_last_event_timestamp_seconds", ())] == 1050.0
    never = _samples(pm.exposition(pm.PipelineFacts(), now=1200.0))
    assert never == {("rice_drift_events", ()): 0}  # no drift yet: no timestamp of 1970
    assert samples[("rice_drift_adjusted_p_value", (("check", "confidence"),))] == 0.001


def test_p_values_come_only_from_well_formed_checks():
    extra = {"checks": [{"name": "confidence", "adjusted_p": 0.01},
                        {"name": "bool", "adjusted_p": True},
                        {"name": 7, "adjusted_p": 0.5},
                        "not a check",
                        {"name": "text", "adjusted_p": "0.5"}]
             + [{"name": f"c{i}", "adjusted_p": 0.5} for i in range(100)]}
    found = pm.p_values_of(extra)
    assert found["confidence"] == 0.01
    assert not {"bool", "text"} & found.keys()
    assert len(found) == pm.MAX_CHECKS
    for hostile in (None, [], "checks", {"checks": "x"}, {"checks": {"a": 1}}):
        assert pm.p_values_of(hostile) == {}
    body = pm.exposition(pm.PipelineFacts(drift_p_values={"x" * 500: float("nan"),
                                                          "y" * 500: 0.2}), now=0)
    names = [dict(k[1]).get("check") for k in _samples(body) if k[0] ==
             "rice_drift_adjusted_p_value"]
    assert names == ["y" * 64]  # a NaN is left out, a long name cut


def test_scrapes_share_one_read_per_cache_period():
    reads = []
    clock = [100.0]

    def facts():
        reads.append(clock[0])
        time.sleep(0.05)  # a slow database: concurrent scrapes must not each query it
        return pm.PipelineFacts(last_success={"rice_classifier_cicd": clock[0]})

    cached = pm.CachedExposition(facts, ttl=10, clock=lambda: clock[0])
    threads = [threading.Thread(target=cached.read) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reads == [100.0]
    clock[0] = 111.0
    body = cached.read()
    assert reads == [100.0, 111.0]
    assert _samples(body)[("rice_pipeline_last_success_timestamp_seconds",
                           (("dag_id", "rice_classifier_cicd"),))] == 111.0


def test_a_failing_read_is_a_failed_scrape_not_stale_numbers():
    calls = []

    def facts():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("database gone")
        return pm.PipelineFacts(last_success={"rice_classifier_cicd": 1.0})

    clock = [0.0]
    cached = pm.CachedExposition(facts, ttl=1, clock=lambda: clock[0])
    assert b"rice_classifier_cicd" in cached.read()
    clock[0] = 5.0
    with pytest.raises(RuntimeError):
        cached.read()
    with pytest.raises(RuntimeError):  # not the old body either
        cached.read()


def test_the_app_serves_the_exposition():
    from fastapi.testclient import TestClient

    cached = pm.CachedExposition(lambda: pm.PipelineFacts(
        last_success={"rice_classifier_cicd": 42.0}))
    client = TestClient(pm.create_app(cached))
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert 'rice_pipeline_last_success_timestamp_seconds{dag_id="rice_classifier_cicd"} 42.0' \
        in answer.text
    assert client.get("/docs").status_code == 404
