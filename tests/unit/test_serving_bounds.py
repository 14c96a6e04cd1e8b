"""The serving HTTP server's bounds: framing, limits, deadlines, admission, metrics (its
endpoints and their bad inputs: test_serving.py)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time

import numpy as np
import pytest

from tests.helpers.serving_in_thread import (
    CLASSES,
    jpeg_bytes,
    post_json,
    request,
    rng_images,
    run_server,
)
from tests.helpers.serving_traffic import (
    SMUGGLED,
    SMUGGLING,
    exchange,
    multipart,
    png_claiming,
    raw_answer,
    still_open,
)


@pytest.mark.parametrize("shape", sorted(SMUGGLING))
def test_a_smuggled_request_is_never_answered(server, shape):
    statuses, _ = exchange(server, SMUGGLING[shape])
    assert len(statuses) == 1, statuses
    assert statuses[0] < 500 or statuses[0] == 501


def test_pipelined_requests_are_each_answered_in_order(server):
    statuses, _ = exchange(server, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED)
    assert statuses == [200, 200]


def test_hostile_images_and_multipart_bodies_are_4xx(server):
    jpeg = jpeg_bytes(rng_images(1, size=60)[0])
    cases = {
        "bomb": (png_claiming(30000, 30000), {"Content-Type": "image/png"}, 413, "pixels"),
        "over the pixel cap": (png_claiming(2048, 4096), {"Content-Type": "image/png"}, 413,
                               "RICE_SERVING_MAX_PIXELS"),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], {"Content-Type": "image/jpeg"}, 400,
                           "truncated or corrupt"),
        "thousands of parts": (*multipart([(f"f{i}", None, b"x") for i in range(3000)]), 400,
                               "more than 8 parts"),
        "two files": (*multipart([("file", "a.jpg", jpeg), ("file", "b.jpg", jpeg)]), 400,
                      "exactly one"),
        "no file part": (*multipart([("note", None, b"hello")]), 400, "no file part"),
        "huge part header": (*multipart([("file", "a" * 10_000 + ".jpg", jpeg)]), 400,
                             "malformed multipart"),
        "no closing boundary": (multipart([("file", "a.jpg", jpeg)])[0][:-14],
                                multipart([])[1], 400, "incomplete"),
        "no boundary": (b"x", {"Content-Type": "multipart/form-data"}, 400, "boundary"),
    }
    for name, (body, headers, status, fragment) in cases.items():
        got, answer, _ = request(server, "POST", "/predict", body, headers)
        assert (got, fragment in answer["message"]) == (status, True), (name, answer)


def test_chunked_body_over_the_limit_is_413(server):
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    connection.request("POST", "/predict", body=iter([b"0" * 100_000] * 5), encode_chunked=True,
                       headers={"Content-Type": "image/jpeg", "Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    assert response.status == 413
    assert "exceeds the limit of 400000 bytes" in json.loads(response.read())["message"]


@pytest.fixture
def app_calls(monkeypatch):
    """A function that lists (method, path) of every request that reached the application."""
    from rice_mlops.serving.app import ServingApp

    calls, original = [], ServingApp.__call__

    async def recording(self, scope, receive, send):
        calls.append((scope.get("method"), scope.get("path")))
        await original(self, scope, receive, send)

    def reached():
        time.sleep(0.1)  # an application task started by a refused read has run by now
        return calls

    monkeypatch.setattr(ServingApp, "__call__", recording)
    return reached


def chunked_invocation(transfer_encoding: bytes, extra: bytes = b"") -> bytes:
    document = json.dumps({"instances": rng_images(1, size=16).tolist()}).encode()
    return (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + transfer_encoding + extra + b"\r\n%x\r\n" % len(document) + document
            + b"\r\n0\r\n\r\n")


@pytest.mark.parametrize("transfer_encoding", [
    b"Transfer-Encoding: gzip, chunked\r\n", b"Transfer-Encoding: foo\r\n",
    b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked;x=1\r\n",
], ids=["gzip, chunked", "foo", "gzip then chunked", "chunked with a parameter"])
def test_a_transfer_coding_other_than_chunked_gets_501_and_its_body_is_never_read(
        server, app_calls, transfer_encoding):
    statuses, body, closed = raw_answer(server, chunked_invocation(transfer_encoding) + SMUGGLED)
    assert (statuses, closed) == ([501], True)
    assert json.loads(body) == {"error_code": "NOT_IMPLEMENTED", "message":
                                "Transfer-Encoding other than chunked is not implemented"}
    assert app_calls() == []


@pytest.mark.parametrize("data", [
    SMUGGLING["te-and-cl"], chunked_invocation(b"Transfer-Encoding: chunked, chunked\r\n"),
    chunked_invocation(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
    chunked_invocation(b"Transfer-Encoding: chunked\t\r\n"),
    chunked_invocation(b"Transfer-Encoding: chunked\r\n").replace(b"\r\n\r\n", b"\r\n\r\nzz", 1),
], ids=["chunked and Content-Length", "chunked twice", "chunked not last", "tab after chunked",
        "bad chunk size"])
def test_framing_llhttp_refuses_stays_400_and_never_reaches_the_app(server, app_calls, data):
    statuses, body, closed = raw_answer(server, data + SMUGGLED)
    assert (statuses, closed) == ([400], True)
    assert json.loads(body)["error_code"] == "BAD_REQUEST"
    assert app_calls() == []


@pytest.mark.parametrize("transfer_encoding", [
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: Chunked\r\n",
    b"Transfer-Encoding:   chunked  \r\n",
], ids=["chunked", "mixed case", "whitespace"])
def test_a_chunked_invocation_is_answered(server, app_calls, transfer_encoding):
    statuses, body, closed = raw_answer(server, chunked_invocation(
        transfer_encoding, b"Connection: close\r\n"))
    assert (statuses, closed) == ([200], True)
    assert np.asarray(json.loads(body)["predictions"]).shape == (1, 5)
    assert app_calls() == [("POST", "/invocations")]


def metric(port, name, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, text, response = request(port, "GET", "/metrics")
    assert status == 200 and response.getheader("Content-Type").startswith("text/plain")
    return sum(sample.value for family in text_string_to_metric_families(text.decode())
               for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def test_metrics_count_what_was_sent(server):
    before = {key: metric(server, "rice_serving_requests_total", endpoint="/predict", status=key)
              for key in ("200", "400")}
    predicted = metric(server, "rice_serving_predictions_total")
    for _ in range(3):
        request(server, "POST", "/predict", jpeg_bytes(rng_images(1)[0]),
                {"Content-Type": "image/jpeg"})
    request(server, "POST", "/predict", b"junk", {"Content-Type": "image/jpeg"})
    post_json(server, "/invocations", {"instances": rng_images(2).tolist()})
    assert metric(server, "rice_serving_requests_total", endpoint="/predict",
                  status="200") == before["200"] + 3
    assert metric(server, "rice_serving_requests_total", endpoint="/predict",
                  status="400") == before["400"] + 1
    assert metric(server, "rice_serving_predictions_total") == predicted + 5
    assert metric(server, "rice_serving_request_duration_seconds_count",
                  endpoint="/predict") >= 4
    assert metric(server, "rice_serving_model_info", model_version="7", run_id="abc123") == 1
    assert metric(server, "rice_serving_requests_in_flight") == 0


@pytest.fixture(scope="module")
def tight(model_dir):
    yield from run_server(model_dir, max_requests=2, max_connections=40, header_timeout=0.5,
                          body_timeout=0.5, keep_alive_timeout=0.5, max_header_bytes=4096,
                          max_buffered_bytes=1000)


def test_slow_clients_are_cut_off_by_the_server(tight):
    """Each stalled client is closed by the server (`closed`), not by the 5 s the client
    waits: the 0.5 s header and body deadlines act."""
    port, _ = tight
    for data in (b"", b"GET /ping HTTP/1.1\r\nHo",
                 b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\nContent-Length: 9\r\n\r\n"):
        statuses, closed = exchange(port, data, idle=5)
        assert (statuses, closed) == ([], True), data
    statuses, closed = exchange(port, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", idle=5)
    assert (statuses, closed) == ([200], True)  # closed by keep-alive timeout


def test_headers_over_the_cap_get_431_and_the_connection_closed(tight, app_calls):
    port, _ = tight
    statuses, body, closed = raw_answer(port, b"GET /ping HTTP/1.1\r\nX-Pad: " + b"a" * 8000)
    assert (statuses, closed) == ([431], True)
    answer = json.loads(body)
    assert answer["error_code"] == "BAD_REQUEST"
    assert "over 4096 bytes (RICE_SERVING_MAX_HEADER_BYTES)" in answer["message"]
    assert app_calls() == []


@pytest.mark.parametrize("data", [b"GET /ping HTTP/1.1\r\n" + b"X-Many: y\r\n" * 600 + b"\r\n",
                                  b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"],
                         ids=["many headers", "long target"])
def test_complete_headers_over_the_cap_get_431(tight, app_calls, data):
    port, _ = tight
    statuses, closed = exchange(port, data, idle=5)
    assert (statuses, closed) == ([431], True)
    assert app_calls() == []


def test_headers_over_the_cap_across_many_reads_get_431(tight, app_calls):
    port, _ = tight
    pieces = [b"GET /ping HTTP/1.1\r\n", *(b"X-Pad-%d: %s\r\n" % (i, b"a" * 400)
                                           for i in range(10))]
    # The last piece crosses the cap, so nothing is sent after the refusal (a client that goes
    # on sending gets a reset, which may discard the answer).
    assert sum(map(len, pieces[:-1])) <= 4096 < sum(map(len, pieces))
    statuses, body, closed = raw_answer(port, *pieces, pause=0.02)
    assert (statuses, closed) == ([431], True)
    assert "RICE_SERVING_MAX_HEADER_BYTES" in json.loads(body)["message"]
    assert app_calls() == []


@contextlib.contextmanager
def _holding(port: int, count: int, head: bytes):
    """`count` connections that sent `head` and then wait; closed on leaving."""
    holders = []
    try:
        for _ in range(count):
            holders.append(socket.create_connection(("127.0.0.1", port)))
            holders[-1].sendall(head)
        yield holders
    finally:
        for sock in holders:
            sock.close()


def test_posts_over_the_admission_cap_get_503_and_gets_still_answer(tight):
    port, _ = tight
    # Two, admitted by their first body byte, then waiting for the rest.
    with _holding(port, 2, b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 9\r\n\r\n\x89"):
        time.sleep(0.1)
        status, body, response = request(port, "POST", "/predict", b"x",
                                          {"Content-Type": "image/png"})
        assert status == 503 and response.getheader("Retry-After") == "1"
        assert "RICE_SERVING_MAX_REQUESTS" in body["message"]
        assert request(port, "GET", "/ping")[0] == 200


def test_bodies_over_the_buffer_budget_get_503(tight):
    port, _ = tight
    with socket.create_connection(("127.0.0.1", port)) as holder:
        # Holds the 850 bytes it sent (not the 900 it declared), so 200 more do not fit.
        holder.sendall(b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\n"
                       b"Content-Length: 900\r\n\r\n" + b"x" * 850)
        time.sleep(0.1)
        status, body, response = request(port, "POST", "/predict", b"x" * 200,
                                          {"Content-Type": "image/png"})
    assert status == 503 and response.getheader("Retry-After") == "1"
    assert "RICE_SERVING_MAX_BUFFERED_BYTES" in body["message"]
    time.sleep(0.1)  # the holder's bytes are released with its connection
    assert request(port, "POST", "/predict", b"x" * 200, {"Content-Type": "image/png"})[0] == 400


def test_idle_posts_that_declare_a_body_hold_no_place_and_no_budget(tight):
    port, _ = tight
    # More than max_requests (2), each declaring most of the budget (1000).
    with _holding(port, 3, b"POST /predict HTTP/1.1\r\nContent-Type: image/png\r\n"
                           b"Content-Length: 900\r\n\r\n"):
        time.sleep(0.1)
        # Refused as an image (400), not as a server out of places or budget (503).
        assert request(port, "POST", "/predict", b"x" * 200, {"Content-Type": "image/png"}
                       )[0] == 400


def test_four_idle_8_mib_posts_do_not_lock_a_small_predict_out(model_dir, keras_model):
    """Issue 20: four connections that declare 8 MiB (the whole 32 MiB budget) and send
    nothing; a 1 KB /predict is still answered 200 while they are all open."""
    for port, _ in run_server(model_dir, first_byte_timeout=60):  # defaults otherwise
        with _holding(port, 4, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg"
                               b"\r\nContent-Length: %d\r\n\r\n" % (8 * 1024 * 1024)) as holders:
            time.sleep(0.2)
            image = jpeg_bytes(rng_images(1, size=16)[0])
            assert len(image) < 2048
            status, body, _ = request(port, "POST", "/predict", image,
                                      {"Content-Type": "image/jpeg"})
            assert status == 200, body
            assert body["class"] in CLASSES
            assert all(still_open(sock) for sock in holders)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as closing)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_body_that_never_starts_or_falls_below_the_rate_is_closed_early(model_dir):
    for port, _ in run_server(model_dir, first_byte_timeout=0.3, min_body_rate=100,
                              body_timeout=60):
        head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 1000\r\n\r\n")
        # Idle after its headers: closed after 0.3 s, long before the 60 s body timeout.
        assert exchange(port, head, idle=10) == ([], True)
        # 1 byte every 0.3 s (about 3 bytes/s, below 100): closed, never answered.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head)
            with contextlib.suppress(OSError):  # the server closes while it trickles
                for _ in range(20):
                    time.sleep(0.3)
                    sock.sendall(b"x")
            assert _read_all(sock) == b""
        # A body that keeps up is answered (400: not a PNG).
        statuses, _, _ = raw_answer(port, head + b"x" * 250, *[b"x" * 250] * 3, pause=0.3,
                                    idle=10)
        assert statuses == [400]


def test_connections_over_the_cap_are_closed_at_once(tight):
    port, _ = tight
    time.sleep(0.6)  # earlier tests' connections are gone
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    try:
        time.sleep(0.1)
        statuses, closed = exchange(port, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", idle=2)
        assert (statuses, closed) == ([], True)
    finally:
        for sock in held:
            sock.close()


def test_settings_are_read_once_from_the_environment():
    from rice_mlops.serving.settings import Settings

    settings = Settings.from_env({"RICE_PORT": "9000", "RICE_SERVING_MAX_BODY_BYTES": "1000",
                                  "RICE_SERVING_HEADER_TIMEOUT": "2.5",
                                  "RICE_SERVING_INFERENCE_SLOTS": "3",
                                  "RICE_SERVING_MIN_BODY_RATE": "4096",
                                  "RICE_SERVING_FIRST_BYTE_TIMEOUT": "1.5"})
    assert (settings.port, settings.max_body_bytes, settings.header_timeout,
            settings.inference_slots, settings.min_body_rate,
            settings.first_byte_timeout) == (9000, 1000, 2.5, 3, 4096, 1.5)
    with pytest.raises(ValueError, match="RICE_SERVING_MAX_REQUESTS='lots'"):
        Settings.from_env({"RICE_SERVING_MAX_REQUESTS": "lots"})
    with pytest.raises(ValueError, match="RICE_SERVING_BODY_TIMEOUT=0 is out of bounds; it "
                                         "accepts a number > 0: change it, or unset it"):
        Settings.from_env({"RICE_SERVING_BODY_TIMEOUT": "0"})
    with pytest.raises(ValueError, match="RICE_SERVING_BODY_TIMEOUT=nan is out of bounds"):
        Settings.from_env({"RICE_SERVING_BODY_TIMEOUT": "nan"})
    assert Settings.from_env({"RICE_MODEL_PUBLIC_KEY": "/k.pub"}).model_public_key == "/k.pub"
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
