"""The labelling queue: an opt-in, bounded sample of the images the server was asked about,
kept so that people can label them and the next training run learns what drift brought.

Off unless a directory and a rate are set. A sampled `/predict` request costs the request one
random draw and one `put_nowait` of the body it already holds; a writer thread takes the image
out of the body (multipart included) and writes it with a small JSON record beside it (request
id, model, its answer), never following a link and never replacing a file. The queue holds at
most `max_images` images and `max_bytes` bytes: a full queue (or a slow, full or read-only
disk) drops the sample and counts it, and never fails or holds a prediction. Only `/predict`
bodies are sampled: a JSON array of pixels is not an image a labeller can look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

IMAGE_SUFFIXES = {b"\xff\xd8\xff": ".jpg", b"\x89PNG\r\n\x1a\n": ".png"}
_SUFFIXES = tuple(IMAGE_SUFFIXES.values())
# Bodies waiting for the writer: the queue bounds what sampling can make the server hold.
QUEUED_SAMPLES = 8
MAX_SAMPLED_BODY = 2 * 1024 * 1024
# A full queue looks again this often, so images a labeller took away free their room.
RESCAN_SECONDS = 30.0


def image_suffix(data: bytes) -> str | None:
    return next((suffix for magic, suffix in IMAGE_SUFFIXES.items() if data.startswith(magic)),
                None)


def waiting(directory: Path, limit: int = 1_000_000) -> tuple[int, int]:
    """Images in the queue and their bytes (counted up to `limit` entries, so a directory
    someone filled by other means costs a bounded scan); (0, 0) when there is none."""
    count = size = 0
    try:
        with os.scandir(directory) as entries:
            for seen, entry in enumerate(entries):
                if seen >= limit:
                    break
                if entry.name.endswith(_SUFFIXES) and entry.is_file(
                        follow_symlinks=False):
                    count += 1
                    size += entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0, 0
    return count, size


class LabellingQueue:
    def __init__(self, directory: Path, *, rate: float, max_images: int, max_bytes: int,
                 extract: Callable[[str, bytes], bytes], on_sampled: Callable[[], None],
                 on_drop: Callable[[], None]):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.rate = rate
        self.max_images = max_images
        self.max_bytes = max_bytes
        self._extract = extract
        self._on_sampled = on_sampled
        self._on_drop = on_drop
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUED_SAMPLES)
        self._images, self._bytes = waiting(directory)
        self._scanned = time.monotonic()
        # Until when the queue is known to be full: a sample is dropped on the request's path
        # with no record made and nothing queued (measured: a full queue cost a paced /predict
        # 8 % more than none at rate 1, making records the writer then refused).
        self._full_until = 0.0
        self._thread = threading.Thread(target=self._write_loop, name="labelling",
                                         daemon=True)
        self._thread.start()

    def offer(self, content_type: str, body: bytes, record: Callable[[], dict]) -> None:
        """On the request's path: a random draw, then a queued body or nothing; `record`
        (what a labeller sees beside the image) is made only for a sample."""
        if random.random() >= self.rate:  # noqa: S311 (a sample, not a secret)
            return
        if len(body) > MAX_SAMPLED_BODY or time.monotonic() < self._full_until:
            self._on_drop()
            return
        try:
            self._queue.put_nowait((content_type, body, record()))
        except queue.Full:
            self._on_drop()

    def close(self) -> None:
        """Write what is queued (bounded by the queue's size), then stop the writer."""
        if not self._thread.is_alive():
            return
        self._queue.put(None)
        self._thread.join(timeout=10.0)

    def _write_loop(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                written = self._write(*item)
            except Exception:  # noqa: BLE001 (a sample is never worth a server's thread)
                written = False
            (self._on_sampled if written else self._on_drop)()

    def _write(self, content_type: str, body: bytes, record: dict) -> bool:
        data = self._extract(content_type, body)
        suffix = image_suffix(data)
        if suffix is None or not self._has_room(len(data)):
            return False
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        try:
            _create(self.directory / f"{name}.json",
                    json.dumps(record, separators=(",", ":")).encode())
            _create(self.directory / f"{name}{suffix}", data)
        except OSError:
            with contextlib.suppress(OSError):
                (self.directory / f"{name}.json").unlink()
            return False
        self._images += 1
        self._bytes += len(data)
        return True

    def _has_room(self, size: int) -> bool:
        full = self._images >= self.max_images or self._bytes + size > self.max_bytes
        if full and time.monotonic() - self._scanned > RESCAN_SECONDS:
            self._images, self._bytes = waiting(self.directory)
            self._scanned = time.monotonic()
            full = self._images >= self.max_images or self._bytes + size > self.max_bytes
        if full:  # until the next scan may find that a labeller took images away
            self._full_until = time.monotonic() + RESCAN_SECONDS
        return not full


def _create(path: Path, data: bytes) -> None:
    """A new file only: never through a link, never over a file that is there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)
