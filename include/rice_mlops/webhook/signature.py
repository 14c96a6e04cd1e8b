"""GitHub's X-Hub-Signature-256: sha256= + HMAC-SHA256(secret, raw body), hex."""

from __future__ import annotations

import hashlib
import hmac
import re

_FORMAT = re.compile(r"sha256=[0-9a-f]{64}")


class SignatureError(ValueError):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> None:
    """Raise SignatureError (401 missing or wrong, 400 malformed) unless `header` is right."""
    if not header:
        raise SignatureError(401, "missing X-Hub-Signature-256 header")
    if not _FORMAT.fullmatch(header):
        raise SignatureError(400, "malformed X-Hub-Signature-256 (expected sha256=<64 hex>)")
    if not hmac.compare_digest(sign(secret, body), header):
        raise SignatureError(401, "X-Hub-Signature-256 does not match the body")
