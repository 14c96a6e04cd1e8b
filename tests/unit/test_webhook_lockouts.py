"""Idle and slow clients cannot lock a signed push out (issue 20, "cheap lock-outs"): the
webhook app under a real uvicorn server answers a signed push while idle connections
that declare a body hold on, cuts off a body that never starts or trickles with a 408
before its full deadline, and counts the unsigned bytes received against its budget."""

from __future__ import annotations

import contextlib
import socket
import time

import httpx
import pytest

from rice_mlops.core.readers import SettingsError
from rice_mlops.ingress.app import create_app
from rice_mlops.ingress.settings import WebhookSettings
from tests.helpers.serving_traffic import still_open
from tests.helpers.webhook_settings import SECRET, webhook_settings


class _Airflow:
    """Triggers as the REST API would: the first trigger of a run id creates it."""

    def __init__(self):
        self.runs: list[str] = []

    async def trigger(self, dag_id, run_id, conf):
        from rice_mlops.core.airflow_rest import TriggerResult

        created = run_id not in self.runs
        self.runs.append(run_id)
        return TriggerResult(dag_run_id=run_id, created=created)


@contextlib.contextmanager
def _receiver(**overrides):
    """The webhook app under a real uvicorn server in a thread: (port, the Airflow double)."""
    import threading

    import uvicorn

    airflow = _Airflow()
    app = create_app(webhook_settings(repositories=frozenset({"acme/rice"}), **overrides),
                     client=airflow)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1], airflow
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _push(port: int, sha: str = "a" * 40) -> httpx.Response:
    from rice_mlops.ingress.send import push_payload, send

    return send(f"http://127.0.0.1:{port}/github", SECRET,
                push_payload("refs/heads/main", sha, "acme/rice"), timeout=10)


def _declare(port: int, length: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"X-GitHub-Event: push\r\nContent-Length: %d\r\n\r\n" % length + first)
    return sock


@pytest.mark.parametrize("idle", [8, 40])
def test_idle_connections_that_declare_a_body_do_not_lock_a_signed_push_out(idle):
    # Generous deadlines, so the idle clients are all still open when the push is answered.
    with _receiver(first_byte_deadline=30, body_deadline=30) as (port, airflow):
        holders = [_declare(port, 25_000_000) for _ in range(idle)]
        try:
            time.sleep(0.3)  # every idle request has reached the app
            answer = _push(port)
            assert answer.status_code == 200, answer.text
            assert answer.json()["reason"] == "DAG run triggered"
            assert len(airflow.runs) == 1
            # Answered while every idle client still held its connection.
            assert all(still_open(sock) for sock in holders)
        finally:
            for sock in holders:
                sock.close()


def test_a_body_that_never_starts_or_trickles_gets_408_before_the_full_deadline():
    with _receiver(first_byte_deadline=0.5, min_body_rate=100, body_deadline=30) as (port, _):
        idle = _declare(port, 1000)
        trickle = _declare(port, 1000, b"{")
        for _ in range(8):  # 1 byte every 0.3 s: below 100 bytes/s
            time.sleep(0.3)
            with contextlib.suppress(OSError):
                trickle.sendall(b" ")
        results = {}
        for name, sock in (("idle", idle), ("trickle", trickle)):
            sock.settimeout(10)  # well before the 30 s body deadline
            data = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    data += chunk
            sock.close()
            results[name] = data
        assert results["idle"].startswith(b"HTTP/1.1 408"), results["idle"][:200]
        assert b"no body byte within 0.5 s" in results["idle"]
        assert results["trickle"].startswith(b"HTTP/1.1 408"), results["trickle"][:200]
        assert b"slower than 100 bytes/s" in results["trickle"]


def test_the_budget_counts_bytes_received_and_still_bounds_them():
    """25 MB of unsigned bytes at once (max_unverified=1): a client that sent 20 MB holds 20 MB
    of it, so another's 10 MB is refused (503), while a small signed push still fits."""
    with _receiver(max_unverified=1, first_byte_deadline=30, body_deadline=30) as (port, _):
        big = _declare(port, 25_000_000, b"x" * 20_000_000)
        try:
            time.sleep(0.5)
            other = _declare(port, 12_000_000)
            with contextlib.suppress(OSError):  # refused (and closed) while it sends
                other.sendall(b"y" * 10_000_000)
            other.settimeout(10)
            status = other.recv(100)
            other.close()
            assert status.startswith(b"HTTP/1.1 503"), status
            assert _push(port).status_code == 200
            assert still_open(big)
        finally:
            big.close()


def test_body_rate_and_first_byte_settings_are_read_with_their_names(monkeypatch):
    monkeypatch.setenv("GITHUB_WEBHOOK_FIRST_BYTE_TIMEOUT", "1.5")
    monkeypatch.setenv("GITHUB_WEBHOOK_MIN_BODY_RATE", "2048")
    settings = WebhookSettings.from_env()
    assert (settings.first_byte_deadline, settings.min_body_rate) == (1.5, 2048)
    monkeypatch.setenv("GITHUB_WEBHOOK_MIN_BODY_RATE", "-1")
    with pytest.raises(SettingsError, match="GITHUB_WEBHOOK_MIN_BODY_RATE"):
        WebhookSettings.from_env()
