"""Bounds on what an unsigned request can hold before its signature is checked.

The signature covers the whole body, so the body has to be read first; until then the sender
is anonymous. Each body gets a deadline, and only a few may be read at once: beyond that the
request is refused at once (503) instead of buffering another 25 MB nobody vouched for.
"""

from __future__ import annotations

import anyio
from starlette.requests import ClientDisconnect, Request


class BodyRefused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BodyLimits:
    def __init__(self, max_bytes: int, deadline: float, max_unverified: int):
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.max_unverified = max_unverified
        self.reading = 0  # bodies being read now; single event loop, so no lock needed

    async def read(self, request: Request) -> bytes:
        """The raw body, or BodyRefused: too large (413), too slow (408), too many (503)."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            raise BodyRefused(413, f"body larger than {self.max_bytes} bytes")
        if self.reading >= self.max_unverified:
            raise BodyRefused(503, "too many deliveries in progress; redeliver later")
        self.reading += 1
        try:
            body = bytearray()
            with anyio.fail_after(self.deadline):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise BodyRefused(413, f"body larger than {self.max_bytes} bytes")
            return bytes(body)
        except TimeoutError:
            raise BodyRefused(408, f"body not received within {self.deadline:g} s") from None
        except ClientDisconnect:
            raise BodyRefused(400, "client disconnected before the body ended") from None
        finally:
            self.reading -= 1
