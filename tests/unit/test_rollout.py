"""The rollout's pure parts: routing refusals, the serving state's round trip and refusals,
and the verdicts of the shadow and canary stages on measured numbers."""

from __future__ import annotations

import json
import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from rice_mlops.release.rollout import state as st
from rice_mlops.release.rollout.engine import accepting_workers
from rice_mlops.release.rollout.proxy_config import Routing, RoutingError, render
from rice_mlops.release.rollout.verdicts import (
    Budgets,
    MetricsError,
    Window,
    canary_verdict,
    parse_scrape,
    predictions_by_request,
    quantile,
    shadow_verdict,
    step_minimum,
    window,
)

REF = "127.0.0.1:5000/rice-classifier@sha256:" + "a" * 64
REF2 = "127.0.0.1:5000/rice-classifier@sha256:" + "b" * 64


# --- routing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, says", [
    ({"stable_port": 0}, "stable_port"),
    ({"stable_port": "8502"}, "stable_port"),
    ({"stable_port": 8502, "candidate_port": 70000}, "candidate_port"),
    ({"stable_port": 8502, "candidate_percent": 10}, "needs a candidate_port"),
    ({"stable_port": 8502, "mirror": True}, "needs a candidate_port"),
    ({"stable_port": 8502, "candidate_port": 8503, "candidate_percent": 101}, "0 to 100"),
    ({"stable_port": 8502, "candidate_port": 8503, "candidate_percent": 12.5}, "0 to 100"),
    ({"stable_port": 8502, "candidate_port": 8502}, "share port"),
])
def test_a_routing_that_cannot_be_served_is_refused_with_the_value(kwargs, says):
    with pytest.raises(RoutingError, match=says):
        Routing(**kwargs)


@pytest.mark.parametrize("run_dir", ["/tmp/a b", "/tmp/x;include /etc/passwd", "/tmp/{", "/t/$x"])
def test_a_path_nginx_would_read_as_syntax_is_refused(tmp_path, run_dir):
    with pytest.raises(RoutingError, match="syntax"):
        render(Routing.stable_only(8502), listen_host="127.0.0.1", listen_port=8501,
               run_dir=run_dir)
    with pytest.raises(RoutingError, match="syntax"):
        render(Routing.stable_only(8502), listen_host="127.0.0.1", listen_port=8501,
               run_dir=tmp_path, log_dir=run_dir)


def test_the_proxy_cannot_listen_on_a_servers_port_or_a_foreign_address(tmp_path):
    with pytest.raises(RoutingError, match="share port"):
        render(Routing(8502, 8503, 10), listen_host="127.0.0.1", listen_port=8503,
               run_dir=tmp_path)
    with pytest.raises(RoutingError, match="loopback"):
        render(Routing(8502), listen_host="10.0.0.1", listen_port=8501, run_dir=tmp_path)


def test_the_mirror_location_exists_only_in_shadow(tmp_path):
    plain = render(Routing(8502, 8503, 10), listen_host="127.0.0.1", listen_port=8501,
                   run_dir=tmp_path)
    shadow = render(Routing(8502, 8503, 0, mirror=True), listen_host="127.0.0.1",
                    listen_port=8501, run_dir=tmp_path)
    assert "mirror /_shadow" not in plain and "10% candidate;" in plain
    assert "mirror /_shadow;" in shadow and "* stable;" in shadow
    # Mirrored predictions close their connection (nginx would hold the next request on it).
    assert "keepalive_timeout 0;" in shadow and "keepalive_timeout 0;" not in plain


def test_servers_on_their_own_network_are_named_by_address_and_nothing_else(tmp_path):
    hosts = {8502: "172.31.85.11", 8503: "172.31.85.12"}
    conf = render(Routing(8502, 8503, 10, mirror=True), listen_host="0.0.0.0",
                  listen_port=8501, run_dir=tmp_path, upstream_hosts=hosts)
    assert "server 172.31.85.11:8502 max_fails=0;" in conf  # stable
    assert "server 172.31.85.12:8503 max_fails=0;" in conf  # candidate and shadow
    assert "server 172.31.85.11:8502 backup;" in conf
    assert "127.0.0.1:850" not in conf and "listen 0.0.0.0:8501" in conf
    for hostile in ("evil.example", "172.31.85.11:80; include /etc/passwd", "::1", ""):
        with pytest.raises(RoutingError, match="IPv4"):
            render(Routing(8502), listen_host="0.0.0.0", listen_port=8501, run_dir=tmp_path,
                   upstream_hosts={8502: hostile})


def test_the_layout_on_a_network_addresses_each_container_and_publishes_only_the_proxy(
        tmp_path):
    from types import SimpleNamespace

    from rice_mlops.release.rollout.engine import Layout

    on_host = Layout(root=tmp_path, proxy_image="unused")
    assert (on_host.url("blue"), on_host.proxy_url) == ("http://127.0.0.1:8502",
                                                         "http://127.0.0.1:8501")
    assert on_host.listen_host == "127.0.0.1"
    assert on_host.networking(None, "green") == {"network_mode": "host"}

    layout = Layout(root=tmp_path, proxy_image="unused", network="rice-serving",
                    addresses=("172.31.85.10", "172.31.85.11", "172.31.85.12"))
    assert layout.url("green") == "http://172.31.85.12:8503"
    assert layout.proxy_url == "http://172.31.85.10:8501" and layout.listen_host == "0.0.0.0"
    assert layout.upstream_hosts() == {8502: "172.31.85.11", 8503: "172.31.85.12"}
    client = SimpleNamespace(api=SimpleNamespace(
        create_endpoint_config=lambda ipv4_address: {"IPv4Address": ipv4_address}))
    green = layout.networking(client, "green")
    assert green == {"network": "rice-serving",
                     "networking_config": {"rice-serving": {"IPv4Address": "172.31.85.12"}}}
    proxy = layout.networking(client, "proxy")
    assert proxy["networking_config"]["rice-serving"] == {"IPv4Address": "172.31.85.10"}
    assert proxy["ports"] == {"8501/tcp": ("127.0.0.1", 8501)}  # the host's loopback alone
    with pytest.raises(ValueError, match="RICE_ROLLOUT_ADDRESSES"):
        Layout(root=tmp_path, proxy_image="unused", network="rice-serving")
    # An internal serving network: the proxy is published from a door of its own, and joins
    # the serving network at its address after it is created (rice_mlops.release.rollout.engine).
    doored = Layout(root=tmp_path, proxy_image="unused", network="rice-serving",
                    addresses=("172.31.85.10", "172.31.85.11", "172.31.85.12"),
                    door_network="rice-serving-door")
    assert doored.networking(client, "proxy") == {
        "network": "rice-serving-door", "ports": {"8501/tcp": ("127.0.0.1", 8501)}}
    assert doored.networking(client, "blue")["network"] == "rice-serving"
    with pytest.raises(ValueError, match="RICE_ROLLOUT_DOOR_NETWORK"):
        Layout(root=tmp_path, proxy_image="unused", door_network="rice-serving-door")


# --- serving state ----------------------------------------------------------------------------

def test_a_rollout_moves_slots_and_keeps_history(tmp_path):
    path = tmp_path / "serving" / "state.json"
    first = st.ServingState().with_candidate(st.Deployment(st.SLOTS[0], REF, "1"), "shadow", 0,
                                              "shadow v1").finished("serving v1")
    st.save(path, first)
    loaded = st.load(path)
    assert loaded == first and loaded.stable.slot == "blue" and loaded.free_slot() == "green"
    second = loaded.with_candidate(st.Deployment(loaded.free_slot(), REF2, "2"), "canary", 10,
                                   "canary 10 %")
    st.save(path, second)
    assert st.load(path).candidate_percent == 10
    done = st.load(path).finished("serving v2")
    assert done.stable.reference == REF2 and done.history[0].reference == REF
    assert done.free_slot() == "blue" and done.phase == "idle"
    rolled = second.rolled_back("rolled back v2")
    assert rolled.stable.reference == REF and rolled.candidate is None


def test_nothing_deployed_is_an_empty_state(tmp_path):
    assert st.load(tmp_path / "none.json") == st.ServingState(updated=st.load(
        tmp_path / "none.json").updated)


@pytest.mark.parametrize("mutate, says", [
    (lambda d: d.update(version=2), "version-1"),
    (lambda d: d["stable"].update(reference="evil.example/x:latest"), "by digest"),
    (lambda d: d["stable"].update(slot="red"), "slot"),
    (lambda d: d["stable"].update(model_version="1; rm -rf /"), "not a number"),
    (lambda d: d.update(phase="canary"), "phase canary with candidate None"),
    (lambda d: d.update(candidate_percent=-1), "0-100"),
    (lambda d: d.update(extra="x"), "unexpected keyword"),
    (lambda d: d.update(history=[1]), "is an object"),
])
def test_a_state_file_that_cannot_be_trusted_is_refused_with_what_to_do(tmp_path, mutate,
                                                                        says):
    path = tmp_path / "state.json"
    good = st.ServingState(stable=st.Deployment("blue", REF, "1"))
    raw = json.loads(good.to_json())
    mutate(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(st.StateError, match=says) as caught:
        st.load(path)
    assert "rice_rollback" in str(caught.value)


def test_a_torn_or_huge_state_file_is_refused(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(st.ServingState().to_json()[:20])
    with pytest.raises(st.StateError, match="cannot be trusted"):
        st.load(path)
    path.write_text(" " * (st.MAX_STATE_BYTES + 1))
    with pytest.raises(st.StateError, match="over"):
        st.load(path)


# --- metrics and verdicts ---------------------------------------------------------------------

def exposition(answers: dict[tuple[str, int], int], latencies: list[float]) -> str:
    """What a rice serving server's /metrics says (its own metric names and buckets)."""
    from rice_mlops.serving.metrics import _BUCKETS

    registry = CollectorRegistry()
    requests = Counter("rice_serving_requests", "x", ["endpoint", "status"], registry=registry)
    latency = Histogram("rice_serving_request_duration_seconds", "x", ["endpoint"],
                        buckets=_BUCKETS, registry=registry)
    for (endpoint, status), count in answers.items():
        requests.labels(endpoint, str(status)).inc(count)
    for seconds in latencies:
        latency.labels("/predict").observe(seconds)
    latency.labels("/ping").observe(30.0)  # not a prediction: never counted
    return generate_latest(registry).decode()


def test_a_window_counts_only_prediction_answers_between_the_scrapes():
    before = parse_scrape(exposition({("/predict", 200): 10, ("/ping", 500): 3}, [0.001] * 10))
    after = parse_scrape(exposition({("/predict", 200): 108, ("/predict", 503): 2,
                                     ("/invocations", 200): 5, ("/ping", 500): 9},
                                    [0.001] * 10 + [0.004] * 99 + [0.2] * 6))
    measured = window(before, after)
    assert (measured.requests, measured.errors) == (105, 2)
    assert 0.1 < measured.p99_seconds <= 0.25  # 6 of 105 slow answers: p99 among them


def test_a_restarted_server_is_not_measured_as_a_negative_window():
    before = parse_scrape(exposition({("/predict", 200): 50}, [0.001] * 50))
    after = parse_scrape(exposition({("/predict", 200): 3}, [0.001] * 3))
    with pytest.raises(MetricsError, match="restarted"):
        window(before, after)


@pytest.mark.parametrize("text", ["", "garbage{{{", "# HELP x y\nx 1\n", "a" * (1024 * 1024 + 1)])
def test_something_that_is_not_a_serving_servers_metrics_is_refused(text):
    with pytest.raises(MetricsError):
        parse_scrape(text)


def test_quantile_interpolates_like_prometheus():
    # 100 observations: 50 in (0, 0.01], 49 in (0.01, 0.1], 1 in (0.1, +Inf)
    cumulative = {0.01: 50, 0.1: 99, math.inf: 100}
    assert quantile(0.5, cumulative) == pytest.approx(0.01)
    assert quantile(0.99, cumulative) == pytest.approx(0.1)
    assert quantile(0.75, cumulative) == pytest.approx(0.01 + 0.09 * 25 / 49)
    assert quantile(0.999, cumulative) == 0.1  # in +Inf: the largest finite bound
    assert quantile(0.99, {0.01: 0, math.inf: 0}) is None


BUDGETS = Budgets(min_requests=10, min_agreement=0.9, max_p99_ms=20)


@pytest.mark.parametrize("candidate, passed, says", [
    (Window(100, 0, 0.004), True, "at 10 %: 100 answers"),
    (Window(100, 1, 0.004), False, "1 of 100 answers were 5xx"),
    (Window(100, 0, 0.041), False, "p99 41 ms > 20 ms"),
    (Window(0, 0, None), False, "answered 0 requests in the window, fewer than the 1"),
])
def test_a_canary_step_passes_only_within_every_budget(candidate, passed, says):
    verdict = canary_verdict(candidate, Window(900, 0, 0.003), BUDGETS, 10)
    assert verdict.passed is passed and says in verdict.reason
    assert verdict.numbers["stable_requests"] == 900


@pytest.mark.parametrize("percent, needed", [(1, 1), (10, 5), (50, 25), (100, 50)])
def test_a_canary_step_needs_its_share_of_the_minimum_requests(percent, needed):
    budgets = Budgets(min_requests=50, min_agreement=0.9, max_p99_ms=20)
    assert step_minimum(budgets, percent) == needed
    short = canary_verdict(Window(needed - 1, 0, 0.004), None, budgets, percent)
    enough = canary_verdict(Window(needed, 0, 0.004), None, budgets, percent)
    assert not short.passed and enough.passed
    assert f"fewer than the {needed} this step needs" in short.reason


def log_lines(answers: dict[str, str]) -> list[str]:
    return [json.dumps({"request_id": rid, "classes": [name]}) for rid, name in answers.items()]


def test_shadow_joins_on_request_id_and_counts_agreement():
    stable = predictions_by_request(log_lines({f"r{i}": "Jasmine" for i in range(20)}))
    candidate = predictions_by_request(
        log_lines({f"r{i}": ("Jasmine" if i < 19 else "Arborio") for i in range(20)})
        + log_lines({"only-candidate": "Jasmine"}) + ["{torn", "[]", "x" * 70_000])
    verdict = shadow_verdict(stable, candidate, Window(21, 0, 0.003), BUDGETS)
    assert verdict.passed, verdict.reason
    assert verdict.numbers["joined"] == 20 and verdict.numbers["agreement"] == 0.95
    strict = shadow_verdict(stable, candidate, Window(21, 0, 0.003),
                            Budgets(min_requests=10, min_agreement=0.98, max_p99_ms=20))
    assert not strict.passed and "agreement 95.0% on 20 requests < 98.0%" in strict.reason


@pytest.mark.parametrize("joined, window_, says", [
    (5, Window(5, 0, 0.003), "5 requests answered by both, fewer than 10"),
    (20, Window(20, 2, 0.003), "2 mirrored requests with 5xx"),
    (20, Window(20, 0, 0.5), "p99 500 ms > 20 ms"),
])
def test_shadow_fails_on_too_few_requests_errors_or_latency(joined, window_, says):
    answers = predictions_by_request(log_lines({f"r{i}": "Ipsala" for i in range(joined)}))
    verdict = shadow_verdict(answers, answers, window_, BUDGETS)
    assert not verdict.passed and says in verdict.reason


# --- rollback on demand -----------------------------------------------------------------------

def test_a_rollback_goes_to_the_named_or_the_previous_deployment_and_nowhere_else():
    from rice_mlops.release.rollout.state import RolloutRefused, choose_rollback

    first = st.Deployment("blue", REF, "1")
    second = st.Deployment("green", REF2, "2")
    third = st.Deployment("blue", REF.replace("a" * 64, "d" * 64), "3")
    current = st.ServingState(stable=third, history=(second, first))
    assert choose_rollback(current, None) == second
    assert choose_rollback(current, "1") == first
    with pytest.raises(RolloutRefused, match=r"v7 never served here \(earlier deployments: "
                                             r"v2, v1\)"):
        choose_rollback(current, "7")
    with pytest.raises(RolloutRefused, match="only deployment on record"):
        choose_rollback(st.ServingState(stable=first), None)
    with pytest.raises(RolloutRefused, match="nothing serves yet"):
        choose_rollback(st.ServingState(), "1")


def test_a_prediction_log_the_server_replaced_with_a_link_is_never_read(tmp_path):
    """The serving container writes its log directory; a link there could name any file of
    the release worker (its signing key). The rollout refuses it instead of following it."""
    from types import SimpleNamespace

    from rice_mlops.release.rollout.driver import Plan, Rollout, RolloutRefused
    from rice_mlops.release.rollout.engine import Layout

    layout = Layout(root=tmp_path / "serving", proxy_image="unused")
    secret = tmp_path / "signing.key"
    secret.write_text(json.dumps({"request_id": "r1", "classes": ["leaked"]}) + "\n")
    logs = layout.log_dir("blue")
    logs.mkdir(parents=True)
    (logs / "predictions.jsonl").symlink_to(secret)

    rollout = Rollout(SimpleNamespace(layout=layout), Plan(), ())  # reads files only
    with pytest.raises(RolloutRefused, match="is not the server's log file"):
        rollout._predictions("blue")
    (logs / "predictions.jsonl").unlink()
    huge = b"x" * (200 * 1024) + b"\n" + json.dumps(
        {"request_id": "r2", "classes": ["Jasmine"]}).encode() + b"\n"
    (logs / "predictions.jsonl").write_bytes(huge)
    assert rollout._predictions("blue") == {"r2": ("Jasmine",)}  # the long line is skipped


def test_only_workers_nginx_has_not_told_to_quit_count_as_accepting():
    top = [(10, "nginx: master process nginx -c /etc/rice-serving-proxy/nginx.conf"),
           (11, "nginx: worker process is shutting down"),
           (12, "nginx: worker process"), (13, "nginx: worker process   "),
           (14, "nginx: cache manager process")]
    assert accepting_workers(top) == {12, 13}
