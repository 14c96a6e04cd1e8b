"""Bounds on what an unsigned request can hold before its signature is checked.

The signature covers the whole body, so the body has to be read first; until then the sender
is anonymous. What an anonymous sender holds is counted in bytes it has sent, not bytes it
declared: a connection that declares 25 MB and sends nothing holds no share of the budget, so
idle clients cannot lock a signed delivery out (issue 20, "cheap lock-outs"). Each body has
deadlines: its first byte within `first_byte` seconds of the headers, then at least `min_rate`
bytes a second on average, and all of it within `deadline`. Bytes over the shared budget are
refused at once (503) instead of buffering more that nobody vouched for.

Framing stays with the server's HTTP parser: this reads the ASGI body messages it hands over.
"""

from __future__ import annotations

import anyio
from starlette.requests import Request


class BodyRefused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BodyLimits:
    def __init__(self, max_bytes: int, deadline: float, budget: int, first_byte: float,
                 min_rate: float):
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.budget = budget  # unsigned body bytes held by all requests together
        self.first_byte = first_byte
        self.min_rate = min_rate
        self.held = 0  # single event loop, so no lock needed

    async def read(self, request: Request) -> bytes:
        """The raw body, or BodyRefused: too large (413), too slow (408), over the shared
        budget (503), or the client went away (400)."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            raise BodyRefused(413, f"body larger than {self.max_bytes} bytes")
        started = anyio.current_time()
        # Chunks as they came, joined once complete: growing one buffer per body, with many
        # bodies arriving at once, fragments the heap, and the memory does not come back.
        chunks: list[bytes] = []
        held = 0
        try:
            while True:
                # By then the next bytes must have come: the first byte within `first_byte`
                # seconds, then `min_rate` bytes a second on average; all within `deadline`.
                due = started + self.first_byte + held / self.min_rate
                end = min(due, started + self.deadline)
                message = None
                with anyio.move_on_after(end - anyio.current_time()):
                    message = await request.receive()
                if message is None:
                    raise BodyRefused(408, self._too_slow(end < due, held))
                if message["type"] == "http.disconnect":
                    raise BodyRefused(400, "client disconnected before the body ended")
                chunk = message.get("body", b"")
                if held + len(chunk) > self.max_bytes:
                    raise BodyRefused(413, f"body larger than {self.max_bytes} bytes")
                if self.held + len(chunk) > self.budget:
                    raise BodyRefused(503, "too many unsigned body bytes in progress; "
                                           "redeliver later")
                self.held += len(chunk)
                held += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        finally:
            self.held -= held

    def _too_slow(self, whole: bool, received: int) -> str:
        if whole:
            return f"body not received within {self.deadline:g} s"
        if not received:
            return f"no body byte within {self.first_byte:g} s"
        return f"body slower than {self.min_rate:g} bytes/s"
