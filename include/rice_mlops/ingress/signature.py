"""GitHub's X-Hub-Signature-256: sha256= + HMAC-SHA256(secret, raw body), hex."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

_FORMAT = re.compile(r"sha256=[0-9a-f]{64}")


class SignatureError(ValueError):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secrets: str | Sequence[str], body: bytes, header: str | None) -> None:
    """Raise SignatureError (401 missing or wrong, 400 malformed) unless `header` is the
    signature of `body` with one of `secrets` (the current one, and the previous during a
    rotation)."""
    if not header:
        raise SignatureError(401, "missing X-Hub-Signature-256 header")
    if not _FORMAT.fullmatch(header):
        raise SignatureError(400, "malformed X-Hub-Signature-256 (expected sha256=<64 hex>)")
    candidates = [secrets] if isinstance(secrets, str) else list(secrets)
    # Every candidate is compared, so the time taken does not tell which one matched.
    matches = [hmac.compare_digest(sign(secret, body), header) for secret in candidates]
    if not any(matches):
        raise SignatureError(401, "X-Hub-Signature-256 does not match the body")
