"""uvicorn's httptools protocol with the bounds it lacks: deadlines for reading a request's
headers and body, a cap on header bytes and a cap on open connections.

llhttp (through httptools) still does all the framing; this class only counts and times.
uvicorn arms its keep-alive timer only after a response, so without these a client that
connects and dribbles one byte a second would hold its connection forever.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rice_mlops.serving.settings import Settings

log = logging.getLogger("rice_mlops.serving")


def bounded_protocol(settings: Settings) -> type[HttpToolsProtocol]:
    class BoundedHttpToolsProtocol(_Bounded):
        _settings = settings

    return BoundedHttpToolsProtocol


class HeadersTooLarge(Exception):
    pass


class _Bounded(HttpToolsProtocol):
    _settings: Settings

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_headers = True
        self._header_bytes = 0  # received while the headers are incomplete
        self._parsed_header_bytes = 0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._settings.max_connections:
            # Refused before a byte is read: a flood of idle sockets costs nothing more.
            log.warning("connection refused: %d open (RICE_SERVING_MAX_CONNECTIONS)",
                        len(self.connections) - 1)
            transport.close()
            return
        self._arm(self._settings.header_timeout, "headers")

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._reading_headers and self._header_bytes > self._settings.max_header_bytes \
                and not self.transport.is_closing():
            log.info("closing %s: request line and headers over %d bytes", self.client,
                     self._settings.max_header_bytes)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True
        self._parsed_header_bytes = 0
        if self._deadline is None:
            self._arm(self._settings.header_timeout, "headers")

    # Counted as llhttp hands them over: headers that arrive in one read are capped as well.
    # Raising here makes httptools fail the parse, and uvicorn answers 400 and closes.
    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_header_bytes(self, size: int) -> None:
        self._parsed_header_bytes += size
        if self._parsed_header_bytes > self._settings.max_header_bytes:
            raise HeadersTooLarge(f"request line and headers over "
                                  f"{self._settings.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._header_bytes = 0
        self._disarm()
        self._arm(self._settings.body_timeout, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str, seconds: float) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("closing %s: %s not received within %.1f s", self.client, what, seconds)
            self.transport.close()
