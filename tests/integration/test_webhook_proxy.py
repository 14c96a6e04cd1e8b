"""docker/webhook-proxy.conf in the real nginx (Debian's, the binary the compose stack's image
runs), in front of a recording stand-in for the API server: what reaches the API server, under
which path, and what a delivery gets while the API server is away or too slow.

Requests go over raw sockets: an HTTP client would clean up the dotted and doubled paths an
attacker sends before they reached nginx.
"""

from __future__ import annotations

import socket
import threading
import time
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

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
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
