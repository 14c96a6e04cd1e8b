"""Where the webhook secret comes from.

GITHUB_WEBHOOK_SECRET in the API server's environment, or, with GITHUB_WEBHOOK_SECRET_VARIABLE
naming one (and GITHUB_WEBHOOK_SECRET unset), an Airflow Variable, so any secrets backend
(Vault, AWS Secrets Manager, ...) can hold it. The Variable is re-read every minute, so
rotating it needs no restart.

GitHub signs with one secret at a time and changing it there is not atomic with changing it
here, so a rotation keeps the old secret accepted for a while: GITHUB_WEBHOOK_SECRET_PREVIOUS
for the environment; for the Variable, the value it replaced stays valid for an hour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

log = logging.getLogger("rice_mlops.webhook")

VARIABLE_TTL_SECONDS = 60.0
ROTATION_GRACE_SECONDS = 3600.0
FIRST_READ_RETRY = 5.0


class SecretUnavailable(RuntimeError):
    """The secret's Variable could not be read (metadata DB or secrets backend down)."""


def read_variable(key: str) -> str | None:
    from airflow.models import Variable

    return Variable.get(key, default_var=None)


class WebhookSecrets:
    def __init__(self, secret: str | None, previous: str | None = None,
                 variable: str | None = None, *, ttl: float = VARIABLE_TTL_SECONDS,
                 grace: float = ROTATION_GRACE_SECONDS,
                 lookup: Callable[[str], str | None] = read_variable,
                 clock: Callable[[], float] = time.monotonic):
        self._secret, self._previous, self.variable = secret, previous, variable
        self._ttl, self._grace, self._lookup, self._clock = ttl, grace, lookup, clock
        self._cached: str | None = None
        self._read_at: float | None = None
        self._replaced: str | None = None  # the Variable's value before its last change
        self._replaced_at = 0.0
        self._retry_at = 0.0
        if secret and variable:
            log.warning("GITHUB_WEBHOOK_SECRET is set, so the Variable %r named by "
                        "GITHUB_WEBHOOK_SECRET_VARIABLE is not used", variable)

    @property
    def configured(self) -> bool:
        return bool(self._secret or self.variable)

    async def current(self) -> tuple[str, ...]:
        """Every secret a delivery may be signed with, newest first; empty when none is set."""
        if self._secret:
            candidates = (self._secret, self._previous)
        else:
            secret = await self._from_variable()
            if not secret:  # a previous secret alone does not open the door
                return ()
            in_grace = self._clock() - self._replaced_at < self._grace
            candidates = (secret, self._replaced if in_grace else None, self._previous)
        return tuple(dict.fromkeys(s for s in candidates if s))

    async def _from_variable(self) -> str | None:
        if not self.variable:
            return None
        now = self._clock()
        fresh = self._read_at is not None and now - self._read_at < self._ttl
        if fresh or now < self._retry_at:
            if self._cached is None:
                raise SecretUnavailable(f"Variable {self.variable!r} unreadable (retrying soon)")
            return self._cached
        try:
            value = await anyio.to_thread.run_sync(self._lookup, self.variable)
        except Exception as exc:  # the backend's own errors vary; the reason is logged
            # Back off, so a slow or failing backend is not called for every delivery.
            self._retry_at = now + (self._ttl if self._cached is not None else FIRST_READ_RETRY)
            log.warning("webhook secret: Variable %r unreadable (%s: %s)%s", self.variable,
                        type(exc).__name__, exc,
                        "; keeping the last value" if self._cached is not None else "")
            if self._cached is None:
                raise SecretUnavailable(f"Variable {self.variable!r} unreadable") from None
            return self._cached
        if self._cached and value != self._cached:
            self._replaced, self._replaced_at = self._cached, now
            log.info("webhook secret: Variable %r changed; the previous value is accepted for "
                     "%.0f more seconds", self.variable, self._grace)
        self._cached, self._read_at = value, now
        return value
