"""Prometheus and Alertmanager in the compose stack (issue 38), after the stack's first run
and its monitoring (this file sorts after test_compose_stack_monitoring.py): behind a login on
127.0.0.1, scraping the serving slot that serves (with its model version), the webhook
receiver and the pipeline's own record, its rules loaded, the drift the monitoring raised
firing an alert that reaches Alertmanager, and its data kept through a restart. The canary
windows it measures for a rollout: tests/chaos/test_pipeline_faults.py (the first run has no
stable to canary against)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.compose_project import ComposeStack
from tests.helpers.prometheus_api import Prometheus

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(shared_compose_stack) -> ComposeStack:
    return shared_compose_stack


@pytest.fixture(scope="module")
def prometheus(stack, compose_pushed_run) -> Prometheus:
    from rice_mlops.operations.demo import Api, follow

    follow(Api(stack.airflow, stack.env["AIRFLOW_ADMIN_PASSWORD"]), compose_pushed_run.run_id,
           timeout=1500)
    return Prometheus(stack.env)


def test_prometheus_answers_only_with_its_login_and_only_on_loopback(stack, prometheus):
    assert httpx.get(f"{prometheus.url}/api/v1/query", params={"query": "up"},
                     timeout=10).status_code == 401
    assert httpx.get(f"{prometheus.url}/-/ready", auth=("prometheus", "wrong-password-1"),
                     timeout=10).status_code == 401
    assert prometheus.get("/-/ready").status_code == 200
    # No admin API or lifecycle endpoint, whatever the login.
    assert prometheus.get("/api/v1/admin/tsdb/snapshot").status_code in (404, 405)
    assert httpx.post(f"{prometheus.url}/-/quit", auth=prometheus.auth,
                      timeout=10).status_code in (403, 404)
    ports = stack.compose("port", "prometheus", "9090").stdout.strip()
    assert ports.startswith("127.0.0.1:"), ports


def test_it_scrapes_the_slot_that_serves_the_webhook_and_the_pipelines_record(
        stack, prometheus, compose_pushed_run):
    state = json.loads((Path(stack.env["RICE_RELEASE_DIR"]) / "serving" / "state.json"
                        ).read_text())
    slot, version = state["stable"]["slot"], state["stable"]["model_version"]
    assert prometheus.wait_for('up{job="rice-pipeline"} == 1'), prometheus.query("up")
    up = {(s["metric"]["job"], s["metric"].get("slot", "")): s["value"][1]
          for s in prometheus.query('up{job=~"rice-.*"}')}
    assert up[("rice-serving", slot)] == "1", up
    assert up[("rice-webhook", "")] == "1" and up[("rice-pipeline", "")] == "1", up
    info = prometheus.wait_for(f'rice_serving_model_info{{slot="{slot}"}}')
    assert [s["metric"]["model_version"] for s in info] == [version]
    # The first run's own rollout replayed its smoke set through the proxy to this slot.
    served = prometheus.query(
        f'sum(rice_serving_requests_total{{slot="{slot}",endpoint="/predict"}})')
    assert served and float(served[0]["value"][1]) > 0, served
    # The webhook's push was counted, and the run's success is on record.
    triggered = prometheus.wait_for('rice_webhook_deliveries_total{outcome="triggered"} > 0')
    assert triggered, prometheus.query("rice_webhook_deliveries_total")
    success = prometheus.wait_for(
        'rice_pipeline_last_success_timestamp_seconds{dag_id="rice_classifier_cicd"}', 90)
    assert success and time.time() - float(success[0]["value"][1]) < 3600, success


def test_the_rules_are_loaded_and_alertmanager_is_attached(stack, prometheus):
    groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
    alerts = {rule["name"] for group in groups for rule in group["rules"]
              if rule["type"] == "alerting"}
    assert {"RiceServingErrorRate", "RiceServingLatencyP99", "RicePipelineNoSuccess",
            "RiceDriftDetected", "RiceReleaseWorkerDown"} <= alerts
    assert all(group.get("lastError", "") == "" for group in groups), groups
    managers = prometheus.get("/api/v1/alertmanagers").json()["data"]["activeAlertmanagers"]
    assert [m["url"] for m in managers] == ["http://alertmanager:9093/api/v2/alerts"]


def test_drift_the_monitoring_raised_fires_an_alert_that_reaches_alertmanager(stack,
                                                                            prometheus):
    """When the monitoring has raised drift (test_compose_stack_monitoring.py, earlier in the
    session), RiceDriftDetected fires and Alertmanager holds it; when it has not, nothing
    fires. Either way the other alerts stay quiet after good runs."""
    # A sample read from Airflow's record after this test began (the API server caches its
    # read for 10 s): the drift raised just before is in it.
    fresh = time.time() + 11
    assert prometheus.wait_for(f"timestamp(rice_drift_events) > {fresh:.0f}", 120), \
        prometheus.query('up{job="rice-pipeline"}')
    raised = prometheus.query("rice_drift_events")
    drifted = float(raised[0]["value"][1]) > 0
    deadline = time.monotonic() + (120 if drifted else 45)
    firing: set[str] = set()
    while time.monotonic() < deadline:
        firing = {a["labels"]["alertname"] for a in
                  prometheus.get("/api/v1/alerts").json()["data"]["alerts"]
                  if a["state"] == "firing"}
        if drifted and "RiceDriftDetected" in firing:
            break
        time.sleep(3)
    assert firing == ({"RiceDriftDetected"} if drifted else set()), firing
    if drifted:
        held = ""
        for _ in range(30):
            held = stack.compose("exec", "-T", "alertmanager", "amtool", "alert", "query",
                                 "--alertmanager.url=http://localhost:9093", "-o", "simple",
                                 "alertname=RiceDriftDetected").stdout
            if "RiceDriftDetected" in held:
                break
            time.sleep(2)
        assert "RiceDriftDetected" in held, held


def test_its_data_survives_a_restart(stack, prometheus):
    before = time.time()
    samples = prometheus.wait_for('count(up{job="rice-serving"})')
    assert samples
    assert stack.compose("restart", "prometheus", timeout=120).returncode == 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if prometheus.get("/-/ready").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    again = prometheus.query('count(up{job="rice-serving"})', at=before)
    assert again == samples or [s["value"][1] for s in again] == \
        [s["value"][1] for s in samples], (again, samples)
