"""rice_mlops.operations.broker_check, the remote worker's check before Celery starts: which
setting is wrong, said once, and the password never printed. The real broker's refusal (Redis
behind the edge's TLS) is tests/integration/test_remote_worker.py's; here the failures a worker
machine meets before it ever reaches one."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from rice_mlops.operations import broker_check

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-broker-password"


class Clock:
    """A monotonic clock the check's sleeps advance, so a 120 s wait takes no time."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_once(handler, context: ssl.SSLContext | None = None) -> int:
    """A loopback server that hands each connection to `handler` (TLS when given a context)."""
    server = socket.create_server(("127.0.0.1", 0))

    def loop():
        with server:
            server.settimeout(10)
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                try:
                    if context is not None:
                        conn = context.wrap_socket(conn, server_side=True)
                    handler(conn)
                except (OSError, ssl.SSLError):
                    pass
                finally:
                    conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return server.getsockname()[1]


def _refuse_password(conn: socket.socket) -> None:
    conn.recv(4096)  # AUTH <password>
    conn.sendall(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")


def _run(env: dict, capsys) -> tuple[int, str, Clock]:
    clock = Clock()
    code = broker_check.check(env, sleep=clock.sleep, clock=clock)
    return code, capsys.readouterr().err, clock


def test_a_refused_password_stops_the_worker_naming_the_setting(capsys):
    port = _serve_once(_refuse_password)
    code, err, clock = _run({broker_check.URL_VARIABLE:
                             f"redis://:{PASSWORD}@127.0.0.1:{port}/0"}, capsys)
    assert code == broker_check.EX_CONFIG
    assert "refused this worker's password" in err and "REDIS_PASSWORD" in err
    assert f"127.0.0.1:{port}" in err and PASSWORD not in err
    assert clock.sleeps == 0  # a wrong password is not retried


def test_an_unreachable_broker_is_waited_for_then_reported(capsys):
    port = _closed_port()
    env = {broker_check.URL_VARIABLE: f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
           "RICE_BROKER_WAIT_SECONDS": "10"}
    code, err, clock = _run(env, capsys)
    assert code == broker_check.EX_UNAVAILABLE
    assert clock.sleeps >= 5 and clock.now >= 10  # retried across the whole wait
    assert "within 10 s" in err and "RICE_CONTROL_PLANE_ADDRESS" in err and PASSWORD not in err


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """Two CAs from scripts/tls: the edge's, and one the worker wrongly holds."""
    root = tmp_path_factory.mktemp("tls")
    for name in ("edge", "other"):
        subprocess.run([REPO / "scripts" / "tls", root / name, "localhost", "127.0.0.1"],
                       check=True, capture_output=True)
    return {"server_crt": root / "edge" / "edge" / "server.crt",
            "server_key": root / "edge" / "edge" / "server.key",
            "ca": root / "edge" / "worker" / "ca.crt",
            "other_ca": root / "other" / "worker" / "ca.crt"}


def _tls_broker_url(certificates, ca: str) -> str:
    """The URL of a TLS broker serving the edge's certificate, trusting `ca` (a key of
    `certificates`), as a worker's compose file writes it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates["server_crt"], certificates["server_key"])
    port = _serve_once(_refuse_password, context)
    return (f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required"
            f"&ssl_ca_certs={certificates[ca]}")


def test_a_broker_certificate_from_another_ca_is_a_configuration_error(certificates, capsys):
    url = _tls_broker_url(certificates, "other_ca")
    code, err, clock = _run({broker_check.URL_VARIABLE: url}, capsys)
    assert code == broker_check.EX_CONFIG
    assert "RICE_CA_FILE" in err and PASSWORD not in err
    assert clock.sleeps == 0


def test_over_tls_with_the_right_ca_the_password_is_what_is_checked(certificates, capsys):
    url = _tls_broker_url(certificates, "ca")
    code, err, _ = _run({broker_check.URL_VARIABLE: url}, capsys)
    assert code == broker_check.EX_CONFIG
    assert "refused this worker's password" in err and PASSWORD not in err


@pytest.mark.parametrize("env, says", [
    ({}, "is not set"),
    ({broker_check.URL_VARIABLE: f"amqp://:{PASSWORD}@h/0"}, "not a usable Redis URL"),
    ({broker_check.URL_VARIABLE: "redis://h:6379/0", "RICE_BROKER_WAIT_SECONDS": "soon"},
     "RICE_BROKER_WAIT_SECONDS='soon' is not a number"),
    ({broker_check.URL_VARIABLE: "redis://h:6379/0", "RICE_BROKER_WAIT_SECONDS": "-1"},
     "RICE_BROKER_WAIT_SECONDS=-1 is out of bounds"),
])
def test_a_missing_or_malformed_setting_is_refused_before_any_connection(env, says, capsys):
    code, err, clock = _run(env, capsys)
    assert code == broker_check.EX_CONFIG and says in err and PASSWORD not in err
    assert clock.sleeps == 0


def test_main_turns_a_bad_wait_into_exit_78(monkeypatch, capsys):
    monkeypatch.setenv(broker_check.URL_VARIABLE, "redis://h:6379/0")
    monkeypatch.setenv("RICE_BROKER_WAIT_SECONDS", "nan")
    assert broker_check.main() == broker_check.EX_CONFIG
    assert "RICE_BROKER_WAIT_SECONDS" in capsys.readouterr().err
