"""The prediction log: one JSON line per answered prediction request, never on its critical
path.

A request only puts a record on a bounded queue (no wait, no I/O); one thread writes the lines
through the standard library's RotatingFileHandler, so the log is bounded on disk too: files of
`max_bytes`, `backups` of them kept. When the queue is full (a slow disk) or a write fails (a
full disk), the record is dropped and counted (`rice_serving_prediction_log_dropped_total` on
/metrics): a prediction never fails or waits for its log line.

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
    """Per image of a (N, H, W, 3) batch: height, width, and mean and spread per channel."""
    values = pixels.astype(np.float32, copy=False)
    means = values.mean(axis=(1, 2))
    spreads = values.std(axis=(1, 2))
    return [{"height": int(pixels.shape[1]), "width": int(pixels.shape[2]),
             "mean": [round(float(v), 2) for v in mean],
             "std": [round(float(v), 2) for v in spread]}
            for mean, spread in zip(means, spreads, strict=True)]


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


class PredictionLog:
    def __init__(self, directory: Path, *, max_bytes: int, backups: int, queue_size: int,
                 on_drop: Callable[[], None]):
        directory.mkdir(parents=True, exist_ok=True)
        self._on_drop = on_drop
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        handler = _CountingHandler(directory / FILE_NAME, maxBytes=max_bytes,
                                   backupCount=backups, encoding="utf-8", delay=True,
                                   on_drop=on_drop)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._listener = _Listener(self._queue, handler)
        self._listener.start()

    def record(self, **fields) -> None:
        line = json.dumps({"time": round(time.time(), 3), **fields}, separators=(",", ":"))
        try:
            self._queue.put_nowait(logging.makeLogRecord({"msg": line, "args": None}))
        except queue.Full:
            self._on_drop()

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
