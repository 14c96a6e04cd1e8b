"""A canary window from two sources, one decision (issue 38): the same traffic to two real
serving servers, measured by their own /metrics and by a real Prometheus (Debian's, unpacked
by scripts/lint.sh) scraping them, gives the same numbers and the same verdicts; and what
Prometheus cannot vouch for (a slot it does not scrape, an answer that is not its API's, a
refused login) is an error that names it, never a quiet window."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest

from rice_mlops.release.rollout.verdicts import (
    Budgets,
    MetricsError,
    canary_verdict,
    parse_scrape,
)
from rice_mlops.release.rollout.windows import DirectMetrics, PrometheusMetrics
from tests.helpers.monitoring_binaries import debian_binary
from tests.helpers.ports import free_port
from tests.helpers.serving_in_thread import jpeg_bytes, request, run_server

SCRAPE = 1.0


@pytest.fixture(scope="module")
def slots(model_dir):
    blue, green = run_server(model_dir), run_server(model_dir)
    ports = {"blue": next(blue)[0], "green": next(green)[0]}
    yield ports
    for server in (blue, green):
        next(server, None)


@pytest.fixture(scope="module")
def prometheus(slots, tmp_path_factory):
    root = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    targets = dict(slots, gone=free_port())  # "gone": a slot nothing listens on
    config = {"global": {"scrape_interval": f"{SCRAPE:g}s"},
              "scrape_configs": [{"job_name": "rice-serving", "static_configs": [
                  {"targets": [f"127.0.0.1:{p}"], "labels": {"slot": slot}}
                  for slot, p in targets.items()]}]}
    (root / "prometheus.yml").write_text(json.dumps(config))
    process = subprocess.Popen(
        [debian_binary("prometheus"), f"--config.file={root / 'prometheus.yml'}",
         f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(root / "log").open("w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            up = httpx.get(f"{url}/api/v1/query", params={"query": "sum(up)"}).json()
            if up["data"]["result"] and float(up["data"]["result"][0]["value"][1]) >= 2:
                break
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("Prometheus did not come up: " + (root / "log").read_text()[-2000:])
    yield url
    process.terminate()
    process.wait(timeout=30)


def _direct(slots) -> DirectMetrics:
    return DirectMetrics(lambda slot: parse_scrape(
        httpx.get(f"http://127.0.0.1:{slots[slot]}/metrics", timeout=5).text))


def _traffic(port: int, good: int, bad: int) -> None:
    image = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (40, 40, 3)))
    for _ in range(good):
        assert request(port, "POST", "/predict", image, {"Content-Type": "image/jpeg"})[0] == 200
    for _ in range(bad):  # not an image: 4xx, an answer that is not an error of the server
        assert request(port, "POST", "/predict", b"junk", {"Content-Type": "image/jpeg"})[0] \
            in (400, 415, 422)
    request(port, "GET", "/ping")  # never counted: not a prediction


def test_the_same_traffic_gives_the_same_windows_and_verdicts_from_both_sources(
        slots, prometheus):
    names = ("green", "blue")
    direct, from_prometheus = _direct(slots), PrometheusMetrics(prometheus,
                                                                scrape_seconds=SCRAPE)
    time.sleep(2 * SCRAPE)  # a sample of the counters as they are before the window
    marks = direct.begin(names), from_prometheus.begin(names)
    _traffic(slots["green"], good=23, bad=4)
    _traffic(slots["blue"], good=9, bad=0)
    by_prometheus = from_prometheus.end(marks[1], names)  # waits for the scrape after it
    by_metrics = direct.end(marks[0], names)
    assert by_prometheus == by_metrics
    assert by_metrics["green"].requests == 27 and by_metrics["green"].errors == 0
    assert by_metrics["blue"].requests == 9
    for budgets in (Budgets(min_requests=20, max_p99_ms=5000),  # passes
                    Budgets(min_requests=100, max_p99_ms=5000),  # too few answers
                    Budgets(min_requests=20, max_p99_ms=0.001)):  # over the latency budget
        verdicts = [canary_verdict(w["green"], w["blue"], budgets, 50)
                    for w in (by_metrics, by_prometheus)]
        assert verdicts[0] == verdicts[1]
    assert [canary_verdict(by_prometheus["green"], by_prometheus["blue"], b, 50).passed
            for b in (Budgets(min_requests=20, max_p99_ms=5000),
                      Budgets(min_requests=20, max_p99_ms=0.001))] == [True, False]


def test_a_slot_prometheus_does_not_scrape_is_an_error_not_an_empty_window(prometheus,
                                                                          monkeypatch):
    import rice_mlops.release.rollout.windows as windows

    monkeypatch.setattr(windows, "SLOTS", ("blue", "green", "gone"))
    source = PrometheusMetrics(prometheus, scrape_seconds=SCRAPE)
    with pytest.raises(MetricsError, match="does not scrape the gone slot"):
        source.end(source.begin(("gone",)), ("gone",))
    with pytest.raises(ValueError, match="unknown slot"):
        PrometheusMetrics(prometheus, scrape_seconds=0).end(0, ('x"} or vector(1) #',))


class _Hostile(http.server.BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, bytes]] = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        status, body = self.answers[self.server.mode]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


_Hostile.answers = {
    "html": (200, b"<html>not the API</html>"),
    "huge": (200, b'{"status": "success", "data": {"resultType": "vector", "result": ['
             + b'{"metric": {}, "value": [1, "1"]},' * 20000 + b"]}"),
    "matrix": (200, b'{"status": "success", "data": {"resultType": "matrix", "result": []}}'),
    "error": (400, b'{"status": "error", "error": "parse error"}'),
    "login": (401, b"Unauthorized"),
    "odd": (200, b'{"status": "success", "data": {"resultType": "vector", "result": '
            b'[{"metric": {}, "value": "no"}]}}'),
}


@pytest.mark.parametrize("mode, says", [
    ("html", "not its query API's JSON"), ("huge", "more than"),
    ("matrix", "not a vector"), ("error", "refused the query"),
    ("login", "refused the login"), ("odd", "not its query API's JSON")])
def test_an_answer_that_is_not_prometheuss_is_refused_with_what_was_wrong(mode, says):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.mode = mode
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        source = PrometheusMetrics(f"http://127.0.0.1:{server.server_port}",
                                   auth=("prometheus", "secret-password"), scrape_seconds=0,
                                   sleep=lambda seconds: None)
        with pytest.raises(MetricsError, match=says) as caught:
            source.end(source.begin(("green",)), ("green",))
        assert "secret-password" not in str(caught.value)
    finally:
        server.shutdown()
