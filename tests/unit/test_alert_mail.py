"""An alert from the fault to the on-call's mailbox and back (issue 38), on real servers: two
serving slots (real uvicorn servers on a real model), Debian's Prometheus scraping them with
the project's rules, Debian's Alertmanager configured by the compose stack's own renderer
(rice_mlops.operations.monitoring_stack), and a real SMTP server. A fault injected into one
slot (its interpreter raises: every prediction answers 500) fires RiceServingErrorRate for that
slot and its model version only, the mail says which, and once the fault is gone the alert
resolves and a second mail says so.

Only time is changed: the rules' durations are divided by 60 (5 minutes of errors become 5
seconds; tests/helpers/monitoring_binaries.compressed_rules) and Alertmanager's grouping waits
are seconds, not minutes. The real durations are tested by `promtool test rules`
(docker/prometheus/tests/rice_test.yml, in scripts/lint.sh)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pytest

from rice_mlops.operations.monitoring_stack import (
    Smtp,
    alertmanager_config,
    prometheus_config,
)
from tests.helpers.mailbox import Mailbox
from tests.helpers.monitoring_binaries import (
    RULES,
    alertmanager_binary,
    compressed_rules,
    debian_binary,
    started,
)
from tests.helpers.ports import free_port
from tests.helpers.serving_in_thread import jpeg_bytes, request, run_server

ONCALL = "oncall@rice.example"
FACTOR = 60  # 5 m -> 5 s


class _Faulty:
    """The slot's classifier, whose predictions raise while `broken` is set (an interpreter
    that fails after a bad deploy); everything else is the real one's."""

    def __init__(self, classifier):
        self._real = classifier
        self.broken = threading.Event()

    def predict(self, pixels):
        if self.broken.is_set():
            raise RuntimeError("injected fault: the interpreter failed")
        return self._real.predict(pixels)

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture(scope="module")
def slots(model_dir):
    blue, green = run_server(model_dir), run_server(model_dir)
    (blue_port, _), (green_port, green_app) = next(blue), next(green)
    fault = _Faulty(green_app.classifier)
    green_app.classifier = fault
    yield {"blue": blue_port, "green": green_port}, fault
    for server in (blue, green):
        next(server, None)


@pytest.fixture(scope="module")
def mailbox():
    box = Mailbox()
    yield box
    box.controller.stop()


@pytest.fixture(scope="module")
def alertmanager(mailbox, tmp_path_factory):
    root = tmp_path_factory.mktemp("alertmanager")
    config = alertmanager_config(Smtp(host="127.0.0.1", port=mailbox.port, require_tls=False),
                                 [ONCALL], "rice-alerts@rice.example")
    config["route"] |= {"group_wait": "1s", "group_interval": "2s"}  # the time compression
    (root / "alertmanager.yml").write_text(json.dumps(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with started([alertmanager_binary(),
                  f"--config.file={root / 'alertmanager.yml'}", f"--storage.path={root / 'data'}",
                  f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                 f"{url}/-/ready", root / "log"):
        yield url


@pytest.fixture(scope="module")
def prometheus(slots, alertmanager, tmp_path_factory):
    ports, _ = slots
    root = tmp_path_factory.mktemp("prometheus")
    (root / "rules").mkdir()
    (root / "rules" / "rice.yml").write_text(compressed_rules(RULES.read_text(), FACTOR))
    config = prometheus_config({slot: f"127.0.0.1:{port}" for slot, port in ports.items()},
                               "unused:1", alertmanager.removeprefix("http://"),
                               ("unused", "unused"), scrape_seconds=1)
    # The serving job and the rules as the stack has them; the stack's other targets are not
    # here (their alerts are tested by promtool).
    config["scrape_configs"] = [job for job in config["scrape_configs"]
                                if job["job_name"] == "rice-serving"]
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(root / "rules" / "*.yml")]
    (root / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with started([debian_binary("prometheus"), f"--config.file={root / 'prometheus.yml'}",
                  f"--storage.tsdb.path={root / 'data'}",
                  f"--web.listen-address=127.0.0.1:{port}"], f"{url}/-/ready", root / "log"):
        yield url


@pytest.fixture(scope="module")
def traffic(slots):
    """Predictions to both slots, about 10 a second each, for the whole module."""
    ports, _ = slots
    image = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (40, 40, 3)))
    answers: dict[str, list[int]] = {"blue": [], "green": []}
    stop = threading.Event()

    def send():
        while not stop.is_set():
            for slot, port in ports.items():
                answers[slot].append(request(port, "POST", "/predict", image,
                                             {"Content-Type": "image/jpeg"})[0])
            stop.wait(0.1)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield answers
    stop.set()
    thread.join(timeout=30)


def _alerts(prometheus: str, name: str) -> list[dict]:
    found = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [alert for alert in found if alert["labels"]["alertname"] == name]


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"not within {timeout:.0f} s: {what}")


def _mails(mailbox: Mailbox, status: str) -> list[tuple[str, str]]:
    return [(message["Subject"], message.get_body(("html", "plain")).get_content())
            for message in mailbox.to(ONCALL)
            if message["Subject"].startswith(f"[{status}")]


def test_a_slot_answering_5xx_pages_with_its_version_and_the_page_resolves(
        slots, traffic, prometheus, alertmanager, mailbox):
    _, fault = slots
    # Healthy traffic first: long enough for the compressed windows (5 s) to fill.
    _wait(lambda: httpx.get(f"{prometheus}/api/v1/query", timeout=10, params={
        "query": "slot:rice_serving_requests:rate5m > 1"}).json()["data"]["result"][1:],
          60, "both slots' request rates recorded")
    time.sleep(6)
    assert _alerts(prometheus, "RiceServingErrorRate") == []
    assert mailbox.to(ONCALL) == []

    fault.broken.set()
    firing = _wait(lambda: [a for a in _alerts(prometheus, "RiceServingErrorRate")
                            if a["state"] == "firing"], 90, "the error alert firing")
    assert [(a["labels"]["slot"], a["labels"]["model_version"]) for a in firing] == \
        [("green", "7")], firing
    assert 500 in traffic["green"] and set(traffic["blue"]) == {200}
    subject, body = _wait(lambda: _mails(mailbox, "FIRING"), 60, "the page mailed")[0]
    assert "RiceServingErrorRate" in subject and "green" in subject, subject
    assert "v7 in slot green answers" in body and "budget 1 %" in body, body[:3000]
    assert "docs/troubleshooting.md#alerts" in body  # the runbook travels with the page

    fault.broken.clear()
    _wait(lambda: not _alerts(prometheus, "RiceServingErrorRate"), 90, "the alert resolved")
    subject, body = _wait(lambda: _mails(mailbox, "RESOLVED"), 60, "the resolution mailed")[0]
    assert "RiceServingErrorRate" in subject and "green" in subject, subject
    assert len(_mails(mailbox, "FIRING")) == 1  # one page for one fault, not one per evaluation


def test_the_compressed_rules_keep_their_meaning_and_only_change_time():
    from tests.helpers.monitoring_binaries import seconds

    text = RULES.read_text()
    short = compressed_rules(text, FACTOR)
    assert "[5s]" in short and "for: 5s" in short and "[5m]" not in short
    assert seconds("1h30m") == 5400 and seconds("250ms") == 0.25
    # Thresholds and numbers outside durations are untouched: `26 * 3600`, `> 0.01`.
    assert short.count("26 * 3600") == text.count("26 * 3600") and "> 0.01" in short
    assert compressed_rules("rate(x[5m:1m] offset 10m)", 30) == "rate(x[10s:2s] offset 20s)"
