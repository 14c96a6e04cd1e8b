"""HTTP endpoints: MLflow's scoring protocol, image upload, metadata; clear 4xx on bad input.

GET  /ping /health /version /metadata
POST /invocations   {"instances": [...]} or {"inputs": [...]}: raw RGB pixels (N, H, W, 3)
POST /predict       a JPEG or PNG, as the body (image/jpeg, image/png) or a multipart file
"""

from __future__ import annotations

import io
import logging
import socket
import time
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image, UnidentifiedImageError

try:  # orjson parses the pixel arrays of /invocations about 1.5x faster than json
    import orjson as _json

    def _loads(data: bytes):
        return _json.loads(data)

    def _dumps(value) -> bytes:
        return _json.dumps(value, option=_json.OPT_SERIALIZE_NUMPY)
except ImportError:  # pragma: no cover - the image always has orjson
    import json as _stdjson

    def _loads(data: bytes):
        return _stdjson.loads(data)

    def _dumps(value) -> bytes:
        return _stdjson.dumps(value, default=lambda o: o.tolist()).encode()

from rice_mlops.serving.classifier import Classifier

log = logging.getLogger("rice_mlops.serving")

MAX_SIDE = 2048
MAX_BATCH = 64
SERVER_VERSION = "rice-serving/1"


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def pixels_from_json(body: bytes) -> np.ndarray:
    try:
        document = _loads(body)
    except ValueError as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"body is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         'expected a JSON object {"instances": [...]} or {"inputs": [...]}')
    keys = [k for k in ("instances", "inputs") if k in document]
    if len(keys) != 1:
        other = ", ".join(sorted(document)) or "none"
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         'expected exactly one of "instances" or "inputs" holding raw RGB '
                         f"pixels shaped (N, H, W, 3); got keys: {other}")
    try:
        pixels = np.asarray(document[keys[0]], dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         f'"{keys[0]}" must be a rectangular array of numbers shaped '
                         "(N, H, W, 3)") from None
    return check_pixels(pixels)


def check_pixels(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         f"expected raw RGB pixels shaped (N, H, W, 3), got shape "
                         f"{list(pixels.shape)} (wrap a single image in a list)")
    n, height, width, _ = pixels.shape
    if not 1 <= n <= MAX_BATCH:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"batch size must be 1 to {MAX_BATCH}, got {n}")
    if not (8 <= height <= MAX_SIDE and 8 <= width <= MAX_SIDE):
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         f"image sides must be 8 to {MAX_SIDE} pixels, got {height}x{width}")
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         "pixel values must be raw RGB numbers in [0, 255] (not normalised)")
    return pixels


def image_bytes_from_request(content_type: str, body: bytes) -> bytes:
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("image/jpeg", "image/png", "application/octet-stream"):
        return body
    if kind == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        for part in message.iter_parts() if message.is_multipart() else []:
            if part.get_filename() or part.get_param("name", header="content-disposition") in (
                    "file", "image"):
                return part.get_payload(decode=True) or b""
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         'multipart body has no file part; send the image as field "file"')
    raise BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                     f"unsupported Content-Type {kind or '(none)'}: send image/jpeg, image/png "
                     "or multipart/form-data with a file field")


def pixels_from_image(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("JPEG", "PNG"):
                raise BadRequest(HTTPStatus.BAD_REQUEST,
                                 f"expected a JPEG or PNG image, got {image.format}")
            if max(image.size) > MAX_SIDE:
                raise BadRequest(HTTPStatus.BAD_REQUEST,
                                 f"image is {image.size[0]}x{image.size[1]}; sides up to "
                                 f"{MAX_SIDE} pixels are accepted")
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         "body is not a readable JPEG or PNG image") from None
    return check_pixels(pixels[None])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = SERVER_VERSION
    classifier: Classifier
    max_body_bytes: int
    routes = {"/ping": {"GET"}, "/health": {"GET"}, "/version": {"GET"},
              "/metadata": {"GET"}, "/invocations": {"POST"}, "/predict": {"POST"}}

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in one segment below; without NODELAY, Nagle's algorithm and
        # the client's delayed ACK add 40 ms to every keep-alive response (measured).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler API
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: HTTPStatus, payload=None, headers: dict | None = None) -> None:
        body = b"" if payload is None else _dumps(payload)
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.flush_headers()  # one write: status line, headers and body

    def _error(self, error: BadRequest) -> None:
        code = "BAD_REQUEST" if error.status < 500 else "INTERNAL_ERROR"
        self._send(error.status, {"error_code": code, "message": error.message}, error.headers)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not chunks")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Content-Length header required")
        if int(length) > self.max_body_bytes:
            self.close_connection = True  # the unread body must not be parsed as a request
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"body of {int(length)} bytes exceeds the limit of "
                             f"{self.max_body_bytes} bytes (RICE_MAX_BODY_BYTES)")
        return self.rfile.read(int(length))

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            allowed = self.routes.get(path)
            if allowed is None:
                raise BadRequest(HTTPStatus.NOT_FOUND,
                                 f"no route {path}; routes: {', '.join(sorted(self.routes))}")
            if self.command not in allowed:
                self.close_connection = self.command == "POST"
                raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED,
                                 f"{self.command} is not allowed on {path}; use "
                                 f"{', '.join(sorted(allowed))}", {"Allow": ", ".join(allowed)})
            getattr(self, "_" + path.strip("/"))()
        except BadRequest as error:
            self._error(error)
        except Exception:  # a bug must answer 500, not drop the connection
            log.exception("unhandled error on %s %s", self.command, path)
            self._error(BadRequest(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error"))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch  # noqa: N815

    def _ping(self) -> None:
        self._send(HTTPStatus.OK)

    def _health(self) -> None:
        self._send(HTTPStatus.OK, {"status": "ok"})

    def _version(self) -> None:
        meta = self.classifier.metadata
        self._send(HTTPStatus.OK, {"server": SERVER_VERSION,
                                   "model_version": meta.get("model_version")})

    def _metadata(self) -> None:
        meta = self.classifier.metadata
        self._send(HTTPStatus.OK, {
            "classes": self.classifier.classes,
            "input": {"dtype": "float32", "shape": [-1, -1, -1, 3],
                      "description": "raw RGB pixels 0-255, any size; resized in the model",
                      "model_image_size": meta.get("image_size")},
            **{key: meta.get(key) for key in ("model_name", "model_version", "run_id",
                                              "source_commit", "dataset_fingerprint")},
        })

    def _invocations(self) -> None:
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                             f"unsupported Content-Type {kind or '(none)'}: send "
                             "application/json with instances or inputs")
        pixels = pixels_from_json(self._body())
        self._send(HTTPStatus.OK, {"predictions": self.classifier.predict(pixels)})

    def _predict(self) -> None:
        data = image_bytes_from_request(self.headers.get("Content-Type", ""), self._body())
        probabilities = self.classifier.predict(pixels_from_image(data))[0]
        classes = self.classifier.classes
        self._send(HTTPStatus.OK, {
            "class": classes[int(np.argmax(probabilities))],
            "probabilities": {c: float(p) for c, p in zip(classes, probabilities, strict=True)},
        })


def make_server(classifier: Classifier, host: str, port: int,
                max_body_bytes: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"classifier": classifier,
                                                "max_body_bytes": max_body_bytes})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(model_dir: str, host: str, port: int, max_body_bytes: int, workers: int) -> None:
    started = time.perf_counter()
    classifier = Classifier(model_dir, workers=workers)
    server = make_server(classifier, host, port, max_body_bytes)
    log.info("serving %s v%s on %s:%d (%d interpreters, ready in %.2fs)",
             classifier.metadata.get("model_name", "model"),
             classifier.metadata.get("model_version", "?"), host, port, workers,
             time.perf_counter() - started)
    try:
        server.serve_forever()
    finally:
        server.server_close()
