"""docker/webhook-proxy.conf in the real nginx (Debian's, the binary the compose stack's image
runs), in front of a recording stand-in for the API server: what reaches the API server, under
which path, what a delivery gets while the API server is away or too slow, and what one client
can hold (connections in progress, request rate, a connection that never sends its headers).

Requests go over raw sockets: an HTTP client would clean up the dotted and doubled paths an
attacker sends before they reached nginx.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers.nginx import webhook_proxy
from tests.helpers.ports import free_port

pytestmark = pytest.mark.integration

BODY = b'{"zen": "hi"}'


class Upstream:
    """Records every request it is sent; answers 200, or after `delay` seconds; stoppable."""

    def __init__(self):
        self.port = free_port()
        self.seen: list[dict] = []
        self.delay = 0.0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                record = {"method": self.command, "path": self.path, "body": None,
                          "headers": dict(self.headers)}
                upstream.seen.append(record)  # before the body: streamed or stored first?
                length = int(self.headers.get("content-length") or 0)
                record["body"] = self.rfile.read(length) if length else b""
                time.sleep(upstream.delay)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = do_HEAD = _any

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the per-client limit test holds 128 at once

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture(scope="module")
def upstream():
    server = Upstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    with webhook_proxy(tmp_path_factory.mktemp("webhook-proxy"), upstream.port) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture(autouse=True)
def fresh(upstream):
    upstream.seen.clear()
    upstream.delay = 0.0
    if upstream.server is None:
        upstream.start()


def raw(port: int, request: bytes, timeout: float = 15) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def post(port: int, path: str, body: bytes = BODY, method: str = "POST", extra: str = ""
         ) -> tuple[int, dict[str, str], bytes]:
    return raw(port, f"{method} {path} HTTP/1.1\r\nHost: hooks.example\r\nContent-Type: "
                     f"application/json\r\nX-GitHub-Event: ping\r\n{extra}Content-Length: "
                     f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)


@pytest.mark.parametrize("path", [
    "/webhooks/github",
    "/api/v2/%2e%2e/%2e%2e/webhooks/github",
    "/x/../webhooks/github",
    "/webhooks//github",
    "/webhooks/github?next=/api/v2/dags",
    "/webhooks/%67ithub",
])
def test_every_spelling_of_the_webhook_reaches_the_api_server_as_webhooks_github(
        proxy, upstream, path):
    status, _, _ = post(proxy, path)
    assert status == 200
    assert [(r["method"], r["path"], r["body"]) for r in upstream.seen] == \
        [("POST", "/webhooks/github", BODY)]
    # GitHub's headers (the signature, the event, the delivery id) arrive as sent.
    assert upstream.seen[0]["headers"]["X-GitHub-Event"] == "ping"


@pytest.mark.parametrize("path", [
    "/", "/api/v2/dags", "/auth/token", "/webhooks/github/", "/webhooks/githubx",
    "/webhooks/github/%2e%2e/%2e%2e/api/v2/version", "/webhooks/github/../../api/v2/version",
    "/execution/", "/WEBHOOKS/GITHUB",
])
def test_nothing_else_reaches_the_api_server(proxy, upstream, path):
    status, _, body = post(proxy, path)
    assert status in (400, 404), (status, body)
    assert upstream.seen == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
def test_only_post_reaches_it(proxy, upstream, method):
    status, _, _ = post(proxy, "/webhooks/github", method=method)
    assert status == 403
    assert upstream.seen == []


def test_a_body_over_githubs_cap_is_refused_before_the_api_server(proxy, upstream):
    status, _, _ = raw(proxy, b"POST /webhooks/github HTTP/1.1\r\nHost: h\r\nContent-Length: "
                              b"26214401\r\nConnection: close\r\n\r\n")
    assert status == 413
    assert upstream.seen == []


def test_the_body_is_streamed_so_the_receivers_own_bounds_apply(proxy, upstream):
    """The API server sees the request while its body is still arriving (nginx does not
    store it first), so the receiver's body deadline and unsigned-body cap hold."""
    with socket.create_connection(("127.0.0.1", proxy), timeout=15) as conn:
        conn.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n"
                     b"Connection: close\r\n\r\n12345")
        deadline = time.monotonic() + 5
        while not upstream.seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r["path"] for r in upstream.seen] == ["/webhooks/github"]
        assert upstream.seen[0]["body"] is None  # still reading it
        conn.sendall(b"67890")
        assert conn.recv(100).startswith(b"HTTP/1.1 200")
    assert upstream.seen[0]["body"] == b"1234567890"


def test_api_server_down_answers_503_with_retry_after(proxy, upstream):
    upstream.stop()
    status, headers, body = post(proxy, "/webhooks/github")
    assert status == 503
    assert headers["retry-after"] == "10"
    assert b"redeliver later" in body and b'"status": 503' in body


def test_api_server_too_slow_answers_503_before_github_gives_up(proxy, upstream):
    upstream.delay = 12  # GitHub waits 10 s: the answer must come before that
    status, headers, _ = raw(proxy, b"POST /webhooks/github HTTP/1.1\r\nHost: h\r\n"
                                    b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
                             timeout=10)
    assert status == 503 and headers["retry-after"] == "10"
    assert len(upstream.seen) == 1  # sent once, never again (proxy_next_upstream off)


def test_the_access_log_says_how_long_the_proxy_and_the_receiver_took(upstream, tmp_path):
    """An on-call engineer tells a slow receiver from a slow network or client by the log."""
    upstream.delay = 0.4
    with webhook_proxy(tmp_path, upstream.port) as url:
        assert post(int(url.rsplit(":", 1)[1]), "/webhooks/github")[0] == 200
    line = next(line for line in (tmp_path / "access.log").read_text().splitlines()
                if "POST /webhooks/github" in line)
    timings = dict(re.findall(r"\b(u?rt)=([0-9.]+)", line))
    assert set(timings) == {"rt", "urt"}, line
    # nginx stamps both from its millisecond clock cache at different moments, so the
    # receiver's share can read one tick above the whole (seen: rt=0.402 urt=0.403).
    assert float(timings["rt"]) + 0.002 >= float(timings["urt"]) >= 0.4, line
    assert float(timings["rt"]) >= 0.4, line


# --- per-client limits and the first-byte deadline (issue 20, "cheap lock-outs") ------------
# Each test gets its own nginx, so what one client spent does not carry over.

@pytest.fixture
def limited(upstream, tmp_path):
    with webhook_proxy(tmp_path, upstream.port) as url:
        yield int(url.rsplit(":", 1)[1])


def _hold(port: int) -> socket.socket:
    """A delivery in progress: headers and half its body sent, so the upstream is reading."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n"
                 b"Connection: close\r\n\r\n12345")
    return sock


def test_one_client_holds_at_most_128_deliveries_in_progress(limited, upstream):
    held = [_hold(limited) for _ in range(128)]
    try:
        deadline = time.monotonic() + 10
        while len(upstream.seen) < 128 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(upstream.seen) == 128
        status, headers, body = post(limited, "/webhooks/github")
        assert status == 429, body
        assert headers["retry-after"] == "1" and b'"status": 429' in body
        assert len(upstream.seen) == 128  # refused here, never forwarded
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)  # nginx has seen them go
    assert post(limited, "/webhooks/github")[0] == 200


def test_a_flood_from_one_client_is_cut_to_the_rate_and_burst(limited, upstream):
    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(lambda _: post(limited, "/webhooks/github")[0], range(500)))
    elapsed = time.monotonic() - started
    assert set(statuses) == {200, 429}, statuses
    # 200 at once, then 40 a second (one more for the rounding of nginx's clock).
    assert statuses.count(200) <= 200 + 40 * elapsed + 1, (statuses.count(200), elapsed)
    assert len(upstream.seen) == statuses.count(200)


def test_the_load_tests_rate_from_one_client_all_passes(limited, upstream):
    """tests/helpers/loaded_run.py: 20 deliveries a second from one address, up to 64 at once
    (its thread pool); and tests/chaos/test_webhook_burst.py: 20 at once. All 2xx."""
    start = time.monotonic()

    def paced(i: int) -> int:
        time.sleep(max(0.0, start + i / 20 - time.monotonic()))
        return post(limited, "/webhooks/github")[0]

    with ThreadPoolExecutor(64) as pool:
        burst = list(pool.map(lambda _: post(limited, "/webhooks/github")[0], range(64)))
        start = time.monotonic()
        steady = list(pool.map(paced, range(100)))  # 5 s at 20 a second
    assert burst == [200] * 64 and steady == [200] * 100


@pytest.mark.parametrize("sent", [b"", b"POST /webhooks/github HTTP/1.1\r\nHost: h\r\n"],
                         ids=["nothing", "half the headers"])
def test_a_client_that_does_not_send_its_headers_is_closed_by_the_first_byte_deadline(
        limited, upstream, sent):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", limited), timeout=15) as conn:
        conn.sendall(sent)
        try:
            answer = conn.recv(1000)
        except ConnectionResetError:
            answer = b""
    # 5 s (client_header_timeout), well before the 10 s the proxy allowed before.
    assert answer == b"" and time.monotonic() - started < 8
    assert upstream.seen == []
