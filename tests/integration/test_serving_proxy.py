"""The serving proxy's rendered configuration (rice_mlops.release.rollout.proxy_config) in the real
nginx (Debian's, the binary of the locally built proxy image), in front of two recording
stand-ins for the stable and candidate servers: which server answers at a weight, the request
id both see, the mirror in shadow, and reloads while clients keep calling."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psutil
import pytest

from rice_mlops.release.rollout.engine import accepting_workers
from rice_mlops.release.rollout.proxy_config import ProxyLimits, Routing, render
from tests.helpers.nginx import running_nginx
from tests.helpers.ports import free_port

pytestmark = pytest.mark.integration


class Server:
    """A stand-in serving server: records (request id, path, body size) and answers its name,
    with `status` and after `delay` seconds."""

    def __init__(self, name: str):
        self.name, self.port = name, free_port()
        self.seen: list[dict] = []
        self.delay, self.status = 0.0, 200
        self.answered = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

            def _any(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                server.seen.append({"id": self.headers.get("x-request-id"), "path": self.path,
                                    "bytes": len(body),
                                    "shadow": self.headers.get("x-rice-shadow")})
                time.sleep(server.delay)
                answer = server.name.encode()
                self.send_response(server.status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                server.answered += 1

            do_GET = do_POST = _any

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    stable, candidate = Server("stable"), Server("candidate")
    yield stable, candidate
    stable.close()
    candidate.close()


class Proxy:
    def __init__(self, root, port: int):
        self.root, self.port, self.process = root, port, None
        self.generation = 0  # of the configuration written last
        self.url = f"http://127.0.0.1:{port}"

    def write(self, routing: Routing, limits: ProxyLimits | None = None) -> None:
        conf = self.root / "nginx.conf"
        staged = conf.with_suffix(".new")
        self.generation += 1
        staged.write_text(render(routing, listen_host="127.0.0.1", listen_port=self.port,
                                 run_dir=self.root, log_dir=self.root, limits=limits,
                                 generation=self.generation))
        os.replace(staged, conf)

    def reload(self, routing: Routing) -> None:
        """As the release zone does: a new file, then SIGHUP; wait until no worker from
        before accepts connections and the new workers answer with the new generation."""
        self.write(routing)
        old_workers = accepting_workers(self._workers())
        assert old_workers, f"no accepting nginx worker among {self._workers()}"
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while accepting_workers(self._workers()) & old_workers or \
                httpx.get(f"{self.url}/ping").headers.get("x-rice-routing") != \
                str(self.generation):
            assert time.monotonic() < deadline, "nginx did not take the new configuration"
            time.sleep(0.05)

    def _workers(self) -> list[tuple[int, str]]:
        workers = []
        for child in psutil.Process(self.process.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                workers.append((child.pid, " ".join(child.cmdline())))
        return workers


@pytest.fixture
def proxy(servers, tmp_path):
    stable, _ = servers
    port = free_port()
    made = Proxy(tmp_path, port)
    made.write(Routing.stable_only(stable.port))
    with running_nginx(tmp_path / "nginx.conf", tmp_path, port) as process:
        made.process = process
        stable.seen.clear()  # the start-up probe's request
        yield made


def test_every_request_gets_the_proxys_id_and_a_clients_own_is_replaced(proxy, servers):
    stable, candidate = servers
    answers = [httpx.post(f"{proxy.url}/predict", content=b"x" * 100,
                          headers={"X-Request-Id": "forged-by-client"}) for _ in range(20)]
    assert [a.text for a in answers] == ["stable"] * 20 and not candidate.seen
    ids = [a.headers["x-request-id"] for a in answers]
    assert len(set(ids)) == 20 and "forged-by-client" not in ids
    assert [seen["id"] for seen in stable.seen] == ids
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_a_weight_is_a_share_of_requests(proxy, servers):
    stable, candidate = servers
    proxy.reload(Routing(stable.port, candidate.port, candidate_percent=10))
    with httpx.Client() as client:  # one client, one connection: not split by client
        served = Counter(client.get(f"{proxy.url}/ping").text for _ in range(1000))
    # Binomial(1000, 0.1): mean 100, sd 9.5; outside 55-145 is under one in a million.
    assert 55 <= served["candidate"] <= 145, served
    assert served["stable"] + served["candidate"] == 1000


@pytest.mark.parametrize("percent, expected", [(0, {"stable"}), (100, {"candidate"})])
def test_the_ends_of_the_scale_send_everything_one_way(proxy, servers, percent, expected):
    stable, candidate = servers
    proxy.reload(Routing(stable.port, candidate.port, candidate_percent=percent))
    assert {httpx.get(f"{proxy.url}/ping").text for _ in range(50)} == expected


def test_shadow_mirrors_every_request_and_the_client_never_sees_the_candidate(proxy, servers):
    stable, candidate = servers
    candidate.status = 500  # a broken candidate in shadow hurts nobody
    proxy.reload(Routing(stable.port, candidate.port, mirror=True))
    answers = [httpx.post(f"{proxy.url}/predict", content=os.urandom(50_000),
                          headers={"X-Rice-Shadow": "1"}) for _ in range(30)]
    assert [(a.status_code, a.text) for a in answers] == [(200, "stable")] * 30
    deadline = time.monotonic() + 10
    while len(candidate.seen) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # anything more would arrive now: only predictions are mirrored
    ids = [a.headers["x-request-id"] for a in answers]
    assert sorted(s["id"] for s in stable.seen if s["path"] == "/predict") == sorted(ids)
    assert sorted(s["id"] for s in candidate.seen) == sorted(ids)
    # The mirrored request carries the whole body, to the same path, marked as shadow.
    assert {(s["path"], s["bytes"], s["shadow"]) for s in candidate.seen} == \
        {("/predict", 50_000, "1")}
    assert {s["shadow"] for s in stable.seen} == {None}  # a client cannot claim to be one


def test_in_shadow_a_slow_candidate_never_holds_a_clients_next_request(proxy, servers):
    """nginx holds a kept-alive connection's next request until the mirrored copy of the last
    one is answered; in shadow each prediction is its own connection instead."""
    stable, candidate = servers
    candidate.delay = 10.0  # longer than the mirror's timeout: nginx gives up first
    proxy.reload(Routing(stable.port, candidate.port, mirror=True))
    with httpx.Client() as client:  # one client, as a user's session would be
        answers = [client.post(f"{proxy.url}/predict", content=b"p") for _ in range(5)]
        probe = client.get(f"{proxy.url}/ping")
    assert [(a.status_code, a.text) for a in answers] == [(200, "stable")] * 5
    assert {a.headers["connection"] for a in answers} == {"close"}
    assert probe.text == "stable" and probe.headers["connection"] == "keep-alive"
    # Every request was answered while no mirrored copy was: none waited behind one.
    assert candidate.answered == 0 and len(stable.seen) >= 5


def test_a_dead_candidate_hands_its_requests_to_stable_and_a_dead_mirror_costs_nothing(
        proxy, servers):
    stable, candidate = servers
    candidate.close()  # refuses connections from now on
    proxy.reload(Routing(stable.port, candidate.port, candidate_percent=100))
    answers = [httpx.post(f"{proxy.url}/predict", content=b"q") for _ in range(20)]
    assert [(a.status_code, a.text) for a in answers] == [(200, "stable")] * 20
    stable.seen.clear()
    proxy.reload(Routing(stable.port, candidate.port, mirror=True))
    answers = [httpx.post(f"{proxy.url}/predict", content=b"q") for _ in range(20)]
    assert [(a.status_code, a.text) for a in answers] == [(200, "stable")] * 20
    time.sleep(0.5)
    # The mirror is never retried on stable: stable saw each request once, none as shadow.
    predicted = [s for s in stable.seen if s["path"] == "/predict"]
    assert len(predicted) == 20 and {s["shadow"] for s in predicted} == {None}


def test_reloads_while_clients_call_drop_nothing_in_flight(proxy, servers):
    stable, candidate = servers
    stable.delay = candidate.delay = 0.05
    failures: list[str] = []
    done = threading.Event()

    def client_loop() -> int:
        # A connection per request: an idle kept-alive connection that the old workers close
        # as the client reuses it is HTTP's own race (clients retry it), not a dropped request.
        count = 0
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) \
                as client:
            while not done.is_set():
                try:
                    answer = client.post(f"{proxy.url}/predict", content=b"y" * 2000)
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code} {answer.text[:80]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                count += 1
        return count

    with ThreadPoolExecutor(4) as pool:
        loops = [pool.submit(client_loop) for _ in range(4)]
        for percent in (10, 50, 100, 0, 50):
            proxy.reload(Routing(stable.port, candidate.port, candidate_percent=percent))
        done.set()
        counts = [loop.result() for loop in loops]
    assert not failures, failures[:5]
    assert sum(counts) > 40  # the reloads happened under traffic


def test_a_request_in_flight_during_a_reload_is_answered_by_the_server_it_went_to(proxy,
                                                                                   servers):
    stable, candidate = servers
    stable.delay = 2.0
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.post, f"{proxy.url}/predict", content=b"z", timeout=10)
        time.sleep(0.5)  # in the stable server's hands now
        proxy.reload(Routing(stable.port, candidate.port, candidate_percent=100))
        assert httpx.get(f"{proxy.url}/ping").text == "candidate"
        answer = slow.result()
    assert (answer.status_code, answer.text) == (200, "stable")


def test_a_body_over_the_cap_is_refused_at_the_proxy_and_never_forwarded(servers, tmp_path):
    stable, candidate = servers
    port = free_port()
    made = Proxy(tmp_path, port)
    made.write(Routing(stable.port, candidate.port, candidate_percent=50, mirror=True),
               ProxyLimits(max_body_bytes=64 * 1024))
    with running_nginx(tmp_path / "nginx.conf", tmp_path, port):
        answer = httpx.post(f"{made.url}/predict", content=b"a" * (64 * 1024 + 1))
        fits = httpx.post(f"{made.url}/predict", content=b"a" * (64 * 1024))
    assert answer.status_code == 413
    assert fits.status_code == 200
    forwarded = [s["bytes"] for s in stable.seen + candidate.seen if s["path"] == "/predict"]
    assert forwarded and set(forwarded) == {64 * 1024}
