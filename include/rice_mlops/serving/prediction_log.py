"""The prediction log: one JSON line per answered prediction request, never on its critical
path.

A request only puts its fields and a reference to its pixels on a bounded queue (no wait, no
I/O, no arithmetic); one thread computes the input statistics, makes the JSON line and writes
it through the standard library's RotatingFileHandler, so the log is bounded on disk too:
files of `max_bytes`, `backups` of them kept. The pixels waiting are bounded in bytes as well
(`MAX_WAITING_PIXEL_BYTES`). When the queue or that budget is full (a slow disk) or a write
fails (a full disk), the record is dropped and counted
(`rice_serving_prediction_log_dropped_total` on /metrics): a prediction never fails or waits
for its log line. Measured (benchmarks/prediction_log.py): with the statistics computed
before the answer, the log added 0.5 ms to a 5 ms `/predict`.

Each line says which request (the proxy's `X-Request-Id`), which model answered, what it
answered (classes and probabilities) and cheap statistics of the input (size, per-channel mean
and spread), never the image itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FILE_NAME = "predictions.jsonl"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(raw: bytes | None) -> str | None:
    """The request id as the proxy sets it; anything else (too long, odd bytes) is not kept."""
    if not raw:
        return None
    text = raw.decode("latin-1")
    return text if _REQUEST_ID.fullmatch(text) else None


def input_statistics(pixels: np.ndarray) -> list[dict]:
    """Per image of a (N, H, W, 3) batch: height, width, and mean and spread per channel.

    Each channel is copied into one contiguous row and summed in float64: numpy's mean and
    std over the (H, W) axes of an interleaved float32 array took 7 ms for a 250x250 rice
    image (more than the prediction) and drifted in the second decimal; this takes 0.3 ms and
    is exact to the rounding kept."""
    count = pixels.shape[1] * pixels.shape[2]
    planes = np.ascontiguousarray(
        pixels.reshape(pixels.shape[0], count, 3).transpose(0, 2, 1)).astype(np.float64)
    means = planes.sum(axis=2) / count
    squares = np.einsum("ncp,ncp->nc", planes, planes) / count
    spreads = np.sqrt(np.maximum(squares - means * means, 0.0))
    return [{"height": int(pixels.shape[1]), "width": int(pixels.shape[2]),
             "mean": [round(float(v), 2) for v in mean],
             "std": [round(float(v), 2) for v in spread]}
            for mean, spread in zip(means, spreads, strict=True)]


class _LineFormatter(logging.Formatter):
    """The JSON line of a record: its fields, and the statistics of its pixels, computed here
    in the writer's thread (the pixels are then let go and their bytes freed in the budget)."""

    def __init__(self, release: Callable[[int], None]):
        super().__init__()
        self._release = release

    def format(self, record: logging.LogRecord) -> str:
        fields, pixels = record.fields, record.pixels
        try:
            if pixels is not None:
                fields["input"] = input_statistics(pixels)
        finally:
            record.pixels = None
            if pixels is not None:
                self._release(pixels.nbytes)
        return json.dumps(fields, separators=(",", ":"))


class _CountingHandler(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler whose failed write (a full disk) counts a drop instead of printing
    a traceback per line."""

    def __init__(self, *args, on_drop: Callable[[], None], **kwargs):
        super().__init__(*args, **kwargs)
        self._on_drop = on_drop

    def handleError(self, record) -> None:  # noqa: N802 (logging's name)
        self._on_drop()


class _Listener(logging.handlers.QueueListener):
    def enqueue_sentinel(self) -> None:
        # The stop marker waits for room (the writer is draining); the standard one is
        # put_nowait and fails on a full queue.
        self.queue.put(self._sentinel, timeout=STOP_WAIT_SECONDS)


STOP_WAIT_SECONDS = 5.0
# Pixels of answered requests waiting for their statistics: about five 2048x2048 images, or
# 170 rice-sized ones; a record over it is dropped (and counted), never waited for.
MAX_WAITING_PIXEL_BYTES = 64 * 1024 * 1024


class PredictionLog:
    def __init__(self, directory: Path, *, max_bytes: int, backups: int, queue_size: int,
                 on_drop: Callable[[], None]):
        directory.mkdir(parents=True, exist_ok=True)
        self._on_drop = on_drop
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        handler = _CountingHandler(directory / FILE_NAME, maxBytes=max_bytes,
                                   backupCount=backups, encoding="utf-8", delay=True,
                                   on_drop=on_drop)
        self._waiting_bytes = 0
        self._budget = threading.Lock()
        handler.setFormatter(_LineFormatter(self._release))
        self._listener = _Listener(self._queue, handler)
        self._listener.start()

    def record(self, pixels: np.ndarray | None = None, **fields) -> None:
        """Queue one line: `fields`, and `input` made from `pixels` (a (N, H, W, 3) batch) by
        the writer. The caller must not change `pixels` afterwards."""
        size = 0 if pixels is None else pixels.nbytes
        with self._budget:
            if self._waiting_bytes + size > MAX_WAITING_PIXEL_BYTES:
                self._on_drop()
                return
            self._waiting_bytes += size
        entry = logging.makeLogRecord({"fields": {"time": round(time.time(), 3), **fields},
                                       "pixels": pixels})
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self._release(size)
            self._on_drop()

    def _release(self, size: int) -> None:
        with self._budget:
            self._waiting_bytes -= size

    def close(self) -> None:
        """Write what is queued, then stop the writer (on a graceful stop); once."""
        if self._listener._thread is None:
            return
        try:
            self._listener.stop()
        except queue.Full:  # a writer stuck for STOP_WAIT_SECONDS: the rest is lost
            self._on_drop()
        for handler in self._listener.handlers:
            with contextlib.suppress(OSError):  # a full disk fails the flush like the writes
                handler.close()
