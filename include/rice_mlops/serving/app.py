"""HTTP endpoints as a plain ASGI application: MLflow's scoring protocol, image upload,
metadata, Prometheus metrics; a clear 4xx on bad input.

GET  /ping /health /version /metadata /metrics
POST /invocations   {"instances": [...]} or {"inputs": [...]}: raw RGB pixels (N, H, W, 3)
POST /predict       a JPEG or PNG, as the body (image/jpeg, image/png) or a multipart file

Work is admitted before it is done: a body is refused from its Content-Length (413) before it
is read; a POST takes one of `max_requests` places when its first body byte arrives (over it,
503; GETs are cheap and always answered); body bytes count against `max_buffered_bytes` as they
arrive, never as declared, so a client that declares 8 MiB and sends nothing holds nothing
(protocol.py closes it soon after); parsing or decoding starts only once an inference slot is
free, so memory is bounded by the slot count.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from http import HTTPStatus
from pathlib import Path

import numpy as np

from rice_mlops.serving import decode
from rice_mlops.serving.classifier import Classifier
from rice_mlops.serving.decode import BadRequest
from rice_mlops.serving.labelling import LabellingQueue
from rice_mlops.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from rice_mlops.serving.metrics import Metrics
from rice_mlops.serving.prediction_log import PredictionLog, request_id
from rice_mlops.serving.settings import Settings

log = logging.getLogger("rice_mlops.serving")

SERVER_VERSION = "rice-serving/2"
ROUTES = {"/ping": "GET", "/health": "GET", "/version": "GET", "/metadata": "GET",
          "/metrics": "GET", "/invocations": "POST", "/predict": "POST"}
_JSON = [(b"content-type", b"application/json")]
# A 2048x2048 image costs about 90 MB while it is decoded and classified (pixels, then the
# interpreter's float32 input), an 8 MiB JSON document up to about 150 MB (a body of
# "0,0,0,...": simdjson's index and tape, then the numbers as float64 and float32; about 40 MB
# for pixels written as "217.0, "): larger than these, requests take their turn one at a
# time, so memory stays near base + 150 MB + (slots - 1) x 22 MB instead of slots x 150 MB.
LARGE_IMAGE_PIXELS = 1024 * 1024
LARGE_JSON_BYTES = 1024 * 1024


class ServingApp:
    def __init__(self, classifier: Classifier, settings: Settings):
        self.classifier = classifier
        self.settings = settings
        self.metrics = Metrics(classifier.metadata, classifier.classes, [*ROUTES, "other"])
        # One thread per slot; the semaphore is what a request waits on before decoding.
        self._executor = ThreadPoolExecutor(settings.inference_slots,
                                            thread_name_prefix="inference")
        self._slots = asyncio.Semaphore(settings.inference_slots)
        self._one_large = threading.Lock()
        self._admitted = 0
        self._buffered = 0  # body bytes held by admitted requests
        self.prediction_log = None
        if settings.prediction_log_dir:
            self.prediction_log = PredictionLog(
                Path(settings.prediction_log_dir), max_bytes=settings.prediction_log_max_bytes,
                backups=settings.prediction_log_backups, queue_size=settings.prediction_log_queue,
                on_drop=self.metrics.log_dropped.inc)
        self.labelling = None
        if settings.labelling_dir and settings.labelling_sample_rate > 0:
            self.labelling = LabellingQueue(
                Path(settings.labelling_dir), rate=settings.labelling_sample_rate,
                max_images=settings.labelling_max_images,
                max_bytes=settings.labelling_max_bytes, extract=self._image_bytes,
                on_sampled=self.metrics.labelling_sampled.inc,
                on_drop=self.metrics.labelling_dropped.inc)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self.prediction_log is not None:
            self.prediction_log.close()
        if self.labelling is not None:
            self.labelling.close()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        endpoint = path if path in ROUTES else "other"
        started = time.perf_counter()
        reply = _Reply(send, scope)
        if method == "GET":  # cheap and always answered, even when predictions are saturated
            try:
                await self._dispatch(scope, receive, reply, path, method)
            except BadRequest as error:
                await reply.error(error)
            self.metrics.observe(endpoint, reply.status, time.perf_counter() - started)
            return
        try:
            await self._dispatch(scope, receive, reply, path, method)
        except BadRequest as error:
            await reply.error(error, close=not reply.body_read)
        except Exception:  # a bug answers 500 without details; the log has the traceback
            log.exception("unhandled error on %s %s", method, path)
            await reply.error(BadRequest(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error"),
                              close=True)
        finally:
            if reply.admitted:
                self._admitted -= 1
                self.metrics.in_flight.dec()
            self._buffered -= reply.held
            if reply.status:
                self.metrics.observe(endpoint, reply.status, time.perf_counter() - started)

    async def _dispatch(self, scope, receive, reply: _Reply, path: str, method: str) -> None:
        allowed = ROUTES.get(path)
        if allowed is None:
            raise BadRequest(HTTPStatus.NOT_FOUND,
                             f"no route {path}; routes: {', '.join(sorted(ROUTES))}")
        if method != allowed:
            raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED,
                             f"{method} is not allowed on {path}; use {allowed}",
                             {"allow": allowed})
        if method == "GET":
            await getattr(self, "_" + path.strip("/"))(reply)
            return
        headers = _headers(scope)
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if path == "/invocations":
            kind = decode.media_type(content_type)
            if kind != "application/json":
                raise BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                                 f"unsupported Content-Type {kind or '(none)'}: send "
                                 "application/json with instances or inputs")
        else:
            decode.check_image_content_type(content_type)
        body = await self._read_body(headers, receive, reply)
        reply.body_read = True
        if self.settings.test_added_latency_ms:  # test-only: a slow model for the rollout
            await asyncio.sleep(self.settings.test_added_latency_ms / 1000)
        if path == "/invocations":
            probabilities, pixels = await self._in_slot(self._classify_json, body)
            await reply.json(HTTPStatus.OK, {"predictions": probabilities})
        else:
            probabilities, pixels = await self._in_slot(self._classify_image, body, content_type)
            answer = self._answer(probabilities[0])
            await reply.json(HTTPStatus.OK, answer)
            if self.labelling is not None:
                self.labelling.offer(content_type, body,
                                     lambda: self._sample_record(headers, answer))
        self._log(headers, path, probabilities, pixels)

    async def _read_body(self, headers: dict[bytes, bytes], receive, reply: _Reply) -> bytes:
        limit = self.settings.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED,
                             "a body is required: send Content-Length (or chunked encoding)")
        # llhttp has already refused a malformed or ambiguous length (400), so this is a number.
        if declared is not None and int(declared) > limit:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"body of {int(declared)} bytes exceeds the limit of {limit} bytes "
                             "(RICE_SERVING_MAX_BODY_BYTES)")
        chunks, size = [], 0
        while True:
            message = await receive()  # returns once body bytes have arrived (or the end)
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            if not reply.admitted:
                self._admit(reply)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # chunked bodies declare no length: count them as they come
                raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                 f"body exceeds the limit of {limit} bytes "
                                 "(RICE_SERVING_MAX_BODY_BYTES)")
            self._hold(reply, len(chunk))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _admit(self, reply: _Reply) -> None:
        """Take one of `max_requests` places (reading, waiting for a slot, predicting), or
        refuse (503); a request holds one only once its body has started."""
        if self._admitted >= self.settings.max_requests:
            raise BadRequest(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"{self._admitted} requests in progress (RICE_SERVING_MAX_REQUESTS); retry later",
                {"retry-after": str(self.settings.retry_after_seconds)})
        self._admitted += 1
        reply.admitted = True
        self.metrics.in_flight.inc()

    def _hold(self, reply: _Reply, size: int) -> None:
        """Count body bytes against the budget of all requests together, or refuse (503)."""
        budget = self.settings.max_buffered_bytes
        if self._buffered + size > budget:
            raise BadRequest(HTTPStatus.SERVICE_UNAVAILABLE,
                             f"{self._buffered} body bytes are already held, up to {budget} "
                             "(RICE_SERVING_MAX_BUFFERED_BYTES); retry later",
                             {"retry-after": str(self.settings.retry_after_seconds)})
        self._buffered += size
        reply.held += size

    async def _in_slot(self, work, *args):
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    async def _ping(self, reply: _Reply) -> None:
        await reply.send(HTTPStatus.OK, b"", [])

    async def _health(self, reply: _Reply) -> None:
        await reply.json(HTTPStatus.OK, {"status": "ok"})

    async def _version(self, reply: _Reply) -> None:
        await reply.json(HTTPStatus.OK, {"server": SERVER_VERSION,
                                         "model_version": self.classifier.metadata.get(
                                             "model_version")})

    async def _metadata(self, reply: _Reply) -> None:
        meta = self.classifier.metadata
        await reply.json(HTTPStatus.OK, {
            "classes": self.classifier.classes,
            "input": {"dtype": "float32", "shape": [-1, -1, -1, 3],
                      "description": "raw RGB pixels 0-255, any size; resized in the model",
                      "model_image_size": meta.get("image_size")},
            **{key: meta.get(key) for key in ("model_name", "model_version", "run_id",
                                              "source_commit", "dataset_fingerprint")},
        })

    async def _metrics(self, reply: _Reply) -> None:
        await reply.send(HTTPStatus.OK, self.metrics.render(),
                         [(b"content-type", METRICS_CONTENT_TYPE.encode())])

    def _answer(self, probabilities: np.ndarray) -> dict:
        classes = self.classifier.classes
        return {"class": classes[int(np.argmax(probabilities))],
                "probabilities": {c: float(p)
                                  for c, p in zip(classes, probabilities, strict=True)}}

    def _log(self, headers: dict[bytes, bytes], path: str, probabilities: np.ndarray,
             pixels: np.ndarray) -> None:
        """After the answer is sent: one queued line (the writer computes the input's
        statistics), dropped (and counted) when the writer is behind."""
        if self.prediction_log is None:
            return
        classes = self.classifier.classes
        meta = self.classifier.metadata
        self.prediction_log.record(
            request_id=request_id(headers.get(b"x-request-id")),
            shadow=headers.get(b"x-rice-shadow") == b"1", endpoint=path,
            model_version=meta.get("model_version"), run_id=meta.get("run_id"),
            classes=[classes[i] for i in np.argmax(probabilities, axis=1)],
            probabilities=[[round(float(p), 5) for p in row] for row in probabilities],
            pixels=pixels)

    def _sample_record(self, headers: dict[bytes, bytes], answer: dict) -> dict:
        """What a labeller sees beside the image: the model's answer, to confirm or correct."""
        meta = self.classifier.metadata
        return {"time": round(time.time(), 3),
                "request_id": request_id(headers.get(b"x-request-id")),
                "model_version": meta.get("model_version"), "run_id": meta.get("run_id"),
                "predicted": answer["class"],
                "probabilities": {c: round(p, 5) for c, p in answer["probabilities"].items()}}

    def _image_bytes(self, content_type: str, body: bytes) -> bytes:
        """The image a `/predict` body carries (in the labelling writer's thread)."""
        settings = self.settings
        return decode.image_bytes_from_request(content_type, body, settings.multipart_max_parts,
                                               settings.multipart_max_header_bytes)

    def _classify_json(self, body: bytes) -> tuple[np.ndarray, np.ndarray]:
        with self._one_large if len(body) > LARGE_JSON_BYTES else nullcontext():
            return self._classify(decode.pixels_from_json(body))

    def _classify_image(self, body: bytes, content_type: str
                        ) -> tuple[np.ndarray, np.ndarray]:
        settings = self.settings
        data = self._image_bytes(content_type, body)
        large = decode.image_pixel_count(data, settings.max_pixels) > LARGE_IMAGE_PIXELS
        with self._one_large if large else nullcontext():
            return self._classify(decode.pixels_from_image(data, settings.max_pixels))

    def _classify(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities, and the pixels (the prediction log's writer makes its statistics
        of them after the answer is sent)."""
        probabilities = self.classifier.predict(pixels)
        classes = self.classifier.classes
        self.metrics.predicted([classes[i] for i in np.argmax(probabilities, axis=1)])
        return probabilities, pixels


class _ClientGone(BadRequest):
    def __init__(self):
        super().__init__(HTTPStatus.BAD_REQUEST, "client disconnected")


def _headers(scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


class _Reply:
    """One response: status, headers with Content-Length, body in a single write."""

    def __init__(self, send, scope):
        self._send = send
        self._head = scope["method"] == "HEAD"
        self.status = 0
        self.body_read = False
        self.admitted = False  # holds one of the server's `max_requests` places
        self.held = 0  # body bytes counted against the server's budget

    async def send(self, status: int, body: bytes, headers: list, close: bool = False) -> None:
        self.status = int(status)
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        if close:
            # An unread body is skipped by the parser, but a client may send megabytes of it:
            # closing is cheaper than reading them.
            headers.append((b"connection", b"close"))
        await self._send({"type": "http.response.start", "status": self.status,
                          "headers": headers})
        await self._send({"type": "http.response.body", "body": b"" if self._head else body})

    async def json(self, status: int, payload) -> None:
        await self.send(status, decode.dumps(payload), _JSON)

    async def error(self, error: BadRequest, close: bool = False) -> None:
        if isinstance(error, _ClientGone):
            return
        headers = [*_JSON, *((k.lower().encode(), v.encode()) for k, v in error.headers.items())]
        await self.send(error.status, error_body(error.status, error.message), headers, close)


def error_body(status: int, message: str) -> bytes:
    """The JSON of every refusal, the application's and the protocol's (see protocol.py):
    an MLflow-style `error_code` and a message that says what was expected."""
    code = "BAD_REQUEST" if status < 500 else _ERROR_CODES.get(status, "INTERNAL_ERROR")
    return decode.dumps({"error_code": code, "message": message})


_ERROR_CODES = {HTTPStatus.NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
                HTTPStatus.SERVICE_UNAVAILABLE: "SERVICE_UNAVAILABLE"}
