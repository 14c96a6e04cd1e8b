"""The serving server as the unit tests run it: a real uvicorn server in a thread on a model
directory (`run_server`), and the HTTP calls and images they send it."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time

import numpy as np
from PIL import Image

CLASSES = ["Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag"]


def run_server(model_dir, **overrides):
    """A real uvicorn server on the bounded protocol, in a thread; yields its port."""
    from rice_mlops.serving.server import make_server
    from rice_mlops.serving.settings import Settings

    settings = Settings(**{"model_dir": str(model_dir), "host": "127.0.0.1", "port": 0,
                           "inference_slots": 2, **overrides})
    server, app = make_server(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    yield sock.getsockname()[1], app
    server.should_exit = True
    thread.join(timeout=20)
    app.close()


def request(port, method, path, body=b"", headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    parsed = json.loads(data) if data and response.getheader("Content-Type") == \
        "application/json" else data
    return response.status, parsed, response


def post_json(port, path, document):
    return request(port, "POST", path, json.dumps(document).encode(),
                   {"Content-Type": "application/json"})


def jpeg_bytes(pixels: np.ndarray, fmt="JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def rng_images(n, size=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.float32)
