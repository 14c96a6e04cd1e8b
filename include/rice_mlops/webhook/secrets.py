"""Where the webhook secret comes from.

GITHUB_WEBHOOK_SECRET in the API server's environment, or, with GITHUB_WEBHOOK_SECRET_VARIABLE
naming one, an Airflow Variable, so any secrets backend (Vault, AWS Secrets Manager, ...) can
hold it; the Variable is re-read every minute, so rotating it needs no restart. GitHub signs
with one secret at a time and changing it there is not atomic with changing it here:
GITHUB_WEBHOOK_SECRET_PREVIOUS keeps the old one accepted while deliveries switch over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

log = logging.getLogger("rice_mlops.webhook")

VARIABLE_TTL_SECONDS = 60.0


class SecretUnavailable(RuntimeError):
    """The secret's Variable could not be read (metadata DB or secrets backend down)."""


def read_variable(key: str) -> str | None:
    from airflow.models import Variable

    return Variable.get(key, default_var=None)


class WebhookSecrets:
    def __init__(self, secret: str | None, previous: str | None = None,
                 variable: str | None = None, *, ttl: float = VARIABLE_TTL_SECONDS,
                 lookup: Callable[[str], str | None] = read_variable,
                 clock: Callable[[], float] = time.monotonic):
        self._secret, self._previous, self.variable = secret, previous, variable
        self._ttl, self._lookup, self._clock = ttl, lookup, clock
        self._cached: str | None = None
        self._read_at: float | None = None

    @property
    def configured(self) -> bool:
        return bool(self._secret or self.variable)

    async def current(self) -> tuple[str, ...]:
        """Every secret a delivery may be signed with, newest first; empty when none is set."""
        secret = self._secret or await self._from_variable()
        if not secret:  # the previous secret alone does not open the door
            return ()
        return tuple(s for s in (secret, self._previous) if s)

    async def _from_variable(self) -> str | None:
        if not self.variable:
            return None
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._ttl:
            try:
                self._cached = await anyio.to_thread.run_sync(self._lookup, self.variable)
            except Exception as exc:  # the backend's own errors vary; the reason is logged
                if self._read_at is None:
                    raise SecretUnavailable(f"cannot read Variable {self.variable!r}: "
                                            f"{type(exc).__name__}") from None
                log.warning("keeping the last webhook secret: Variable %r unreadable (%s)",
                            self.variable, type(exc).__name__)
            else:
                self._read_at = now
        return self._cached
