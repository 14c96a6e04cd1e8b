"""Raw HTTP traffic for the serving tests: smuggling shapes, hostile images and multipart bodies.

Shared by the unit tests (server in a thread) and the hostile-traffic tests (the real image);
`still_open` serves the webhook receiver's tests too.
"""

from __future__ import annotations

import socket
import struct
import time
import zlib


def still_open(sock: socket.socket) -> bool:
    """True while the server has neither answered nor closed `sock`."""
    sock.setblocking(False)
    try:
        return not sock.recv(1, socket.MSG_PEEK)  # b"": closed
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def raw_answer(port, *pieces: bytes, pause: float = 0.0, idle: float = 5.0
               ) -> tuple[list[int], bytes, bool]:
    """Send raw pieces, `pause` seconds apart: the statuses answered, the last response's body
    and whether the server closed the connection (within `idle` seconds of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=idle) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(pause)
        received, closed = b"", False
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    statuses = [int(line.split(b" ")[1]) for line in received.split(b"\r\n")
                if line.startswith(b"HTTP/1.")]
    return statuses, received.rsplit(b"\r\n\r\n", 1)[-1], closed


def exchange(port, data: bytes, idle: float = 0.5) -> tuple[list[int], bool]:
    """Send raw bytes; the statuses answered and whether the server closed the connection."""
    statuses, _, closed = raw_answer(port, data, idle=idle)
    return statuses, closed


SMUGGLED = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLING = {
    "get-with-body": b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
    + SMUGGLED,
    "te-and-cl": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "two-lengths": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
    b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
    "superscript-length": "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
    "Content-Length: \u00b2\r\n\r\n".encode() + SMUGGLED,
    "unknown-coding": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
    b"Transfer-Encoding: gzip\r\n\r\n" + SMUGGLED,
    "space-before-colon": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
    b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "folded-coding": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
    b"Transfer-Encoding: identity\r\n chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "404-with-body": b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    % len(SMUGGLED) + SMUGGLED,
    "415-with-body": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
    "chunked-body": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
}


def multipart(parts: list[tuple[str, str | None, bytes]], boundary="b0undary") -> tuple:
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        f'{f"; filename={chr(34)}{filename}{chr(34)}" if filename else ""}\r\n\r\n'.encode()
        + data + b"\r\n" for name, filename, data in parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height over a few bytes of data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


