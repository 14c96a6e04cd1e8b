"""uvicorn's httptools protocol with the bounds it lacks: deadlines for reading a request's
headers and body, a cap on header bytes and a cap on open connections; and the status each
refusal deserves, where uvicorn answers every failed parse with 400.

llhttp (through httptools) still does all the framing; this class only counts, times and
chooses the status: 431 for a request line and headers over the cap (RFC 6585), 501 for a
transfer coding other than chunked (RFC 9112 section 6.1), 400 for whatever else llhttp
refuses. A refused request is answered and its connection closed: the rest of its bytes, a body
included, are never read, and it never reaches the application.

uvicorn arms its keep-alive timer only after a response, so without these a client that
connects and dribbles one byte a second would hold its connection forever. A body must start
within `first_byte_timeout` of its headers and then keep up `min_body_rate` on average (time the
server itself stopped reading is not held against it), all of it within `body_timeout`; a
slower one is closed, so an idle client holds its connection for seconds, not half a minute.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rice_mlops.serving.app import error_body
from rice_mlops.serving.settings import Settings

log = logging.getLogger("rice_mlops.serving")


def bounded_protocol(settings: Settings) -> type[HttpToolsProtocol]:
    class BoundedHttpToolsProtocol(_Bounded):
        _settings = settings

    return BoundedHttpToolsProtocol


class HeadersTooLarge(Exception):
    """Request line and headers over `max_header_bytes`: 431."""


class UnsupportedTransferCoding(Exception):
    """A transfer coding other than chunked, the only one implemented: 501."""


class _Bounded(HttpToolsProtocol):
    _settings: Settings

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        # The body being read: when its window started, bytes received since, the hard end.
        self._body_since = 0.0
        self._body_bytes = 0
        self._body_end = 0.0
        self._reading_headers = True
        self._header_bytes = 0  # received while the headers are incomplete
        self._parsed_header_bytes = 0
        # Requests whose headers completed in the read being parsed: their application tasks
        # start only once the whole read has parsed, so a refused one never reaches the app.
        self._starting: list | None = None

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
        # uvicorn's data_received, with the status chosen by what failed instead of always 400,
        # and the application tasks of this read started only if all of it parsed.
        self._unset_keepalive_if_required()
        if self._reading_headers:
            self._header_bytes += len(data)
        starting: list = []
        self._starting = starting
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._refuse(*_refusal(error))
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        finally:  # whatever escaped, later tasks (a pipelined request's) start at once again
            self._starting = None
        if self._reading_headers and self._header_bytes > self._settings.max_header_bytes:
            self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, self._too_large())
            return
        for cycle, app in starting:
            super()._start_asgi_task(cycle, app)

    def _start_asgi_task(self, cycle, app) -> None:
        if self._starting is None:
            super()._start_asgi_task(cycle, app)
        else:
            self._starting.append((cycle, app))

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer with `status` and a JSON body, then close (nothing more is read)."""
        if self.transport.is_closing():
            return
        log.info("refusing %s: %d %s", self.client, status, message)
        if self.cycle is not None and not self.cycle.response_complete:
            # A request still being answered would write to a closed transport: it is gone.
            self.cycle.disconnected = True
        body = error_body(status, message)
        headers = [*self.server_state.default_headers, (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        self.transport.write(b"HTTP/1.1 %d %s\r\n" % (status, status.phrase.encode())
                             + b"".join(b"%s: %s\r\n" % header for header in headers)
                             + b"\r\n" + body)
        self.transport.close()

    def _too_large(self) -> str:
        return (f"request line and headers over {self._settings.max_header_bytes} bytes "
                f"({self._settings.env_name('max_header_bytes')})")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True
        self._parsed_header_bytes = 0
        if self._deadline is None:
            self._arm(self._settings.header_timeout, "headers")

    # Counted as llhttp hands them over: headers that arrive in one read are capped as well.
    # Raising here makes httptools fail the parse; data_received answers 431 and closes.
    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_header_bytes(self, size: int) -> None:
        self._parsed_header_bytes += size
        if self._parsed_header_bytes > self._settings.max_header_bytes:
            raise HeadersTooLarge(self._too_large())

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._header_bytes = 0
        self._disarm()
        if any(coding != b"chunked" for coding in _transfer_codings(self.headers)):
            # Before uvicorn starts the application: llhttp frames `gzip, chunked` and would hand
            # over a body still gzipped. It refuses `gzip` alone, but only after this callback,
            # and RFC 9112 section 6.3 asks 400 for that (chunked not last); 501 comes first
            # here, as in Go's net/http and h11: the coding is what the server lacks.
            raise UnsupportedTransferCoding("Transfer-Encoding other than chunked is not "
                                            "implemented")
        now = self.loop.time()
        self._body_since, self._body_bytes = now, 0
        self._body_end = now + self._settings.body_timeout
        self._arm_body()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def _body_due(self) -> float:
        """When the body has fallen behind: no first byte within `first_byte_timeout`, then
        below `min_body_rate` on average, or past `body_timeout` in all."""
        settings = self._settings
        behind = (self._body_since + settings.first_byte_timeout
                  + self._body_bytes / settings.min_body_rate)
        return min(behind, self._body_end)

    def _arm_body(self) -> None:
        # Checked when due, not re-armed on every read: a body that keeps up is re-armed then.
        self._disarm()
        self._deadline = self.loop.call_at(self._body_due(), self._body_check)

    def _body_check(self) -> None:
        self._deadline = None
        now = self.loop.time()
        if self.transport.is_closing():
            return
        if now >= self._body_end:
            self._expired("body", self._settings.body_timeout)
            return
        if self.flow.read_paused:
            # The server stopped reading (a pipelined request waits its turn): not the
            # client's fault, so its rate window starts again once reading resumes.
            self._body_since, self._body_bytes = now, 0
            self._arm_body()
            return
        if self._body_due() > now:
            self._arm_body()  # more bytes came since this was armed
            return
        settings = self._settings
        log.info("closing %s: body %s", self.client,
                 f"slower than {settings.min_body_rate} bytes/s "
                 f"({settings.env_name('min_body_rate')})" if self._body_bytes else
                 f"not started within {settings.first_byte_timeout:.1f} s "
                 f"({settings.env_name('first_byte_timeout')})")
        self.transport.close()

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


def _transfer_codings(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The codings of every Transfer-Encoding line, in order, lowercased. llhttp has already
    refused the ambiguous framings: with Content-Length, chunked twice, chunked followed by
    another coding, an empty value."""
    return [coding.strip(b" \t").lower() for name, value in headers
            if name == b"transfer-encoding" for coding in value.split(b",") if coding.strip(b" \t")]


def _refusal(error: httptools.HttpParserError) -> tuple[HTTPStatus, str]:
    """The status and message for a failed parse: a callback's exception is the context."""
    cause = error.__context__
    if isinstance(cause, HeadersTooLarge):
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, str(cause)
    if isinstance(cause, UnsupportedTransferCoding):
        return HTTPStatus.NOT_IMPLEMENTED, str(cause)
    return HTTPStatus.BAD_REQUEST, f"invalid HTTP request: {error}"
