"""Where the webhook secret comes from.

GITHUB_WEBHOOK_SECRET in the API server's environment, or, with GITHUB_WEBHOOK_SECRET_VARIABLE
naming one (and GITHUB_WEBHOOK_SECRET unset), an Airflow Variable, so any secrets backend
(Vault, AWS Secrets Manager, ...) can hold it. The Variable is re-read every minute, so
rotating it needs no restart.

GitHub signs with one secret at a time and changing it there is not atomic with changing it
here, so a rotation keeps the old secret accepted for a while, and only for a while
(GITHUB_WEBHOOK_PREVIOUS_SECRET_TTL, an hour by default): GITHUB_WEBHOOK_SECRET_PREVIOUS from
the API server's start, the value a Variable replaced from when the change was seen. A
forgotten previous secret would otherwise stay a second key forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from rice_mlops.core.readers import SettingsError
from rice_mlops.ingress.settings import ROTATION_GRACE_SECONDS, check_length

log = logging.getLogger("rice_mlops.ingress")

VARIABLE_TTL_SECONDS = 60.0
FIRST_READ_RETRY = 5.0


class SecretUnavailable(RuntimeError):
    """The secret's Variable could not be read (metadata DB or secrets backend down)."""


class WebhookSecrets:
    def __init__(self, secret: str | None, previous: str | None = None,
                 variable: str | None = None, *, ttl: float = VARIABLE_TTL_SECONDS,
                 grace: float = ROTATION_GRACE_SECONDS,
                 lookup: Callable[[str], str | None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._secret, self._previous, self.variable = secret, previous, variable
        self._ttl, self._grace, self._clock = ttl, grace, clock
        if variable and lookup is None:  # the API server's plugin passes Airflow's Variable.get
            raise SettingsError("GITHUB_WEBHOOK_SECRET_VARIABLE",
                                f"the webhook secret is to be read from Variable {variable!r}, "
                                "but no lookup was given",
                                todo="create the app through plugins/github_webhook.py")
        self._lookup = lookup or (lambda key: None)
        self._previous_until = clock() + grace
        self._cached: str | None = None
        self._read_at: float | None = None
        self._replaced: str | None = None  # the Variable's value before its last change
        self._replaced_at = 0.0
        self._retry_at = 0.0
        self._refresh = anyio.Lock()
        self.lookups = 0
        if secret and variable:
            log.warning("GITHUB_WEBHOOK_SECRET is set, so the Variable %r named by "
                        "GITHUB_WEBHOOK_SECRET_VARIABLE is not used", variable)

    @property
    def configured(self) -> bool:
        return bool(self._secret or self.variable)

    def _previous_value(self) -> str | None:
        if self._previous and self._clock() >= self._previous_until:
            log.warning("GITHUB_WEBHOOK_SECRET_PREVIOUS expired %.0f s after start-up and is "
                        "no longer accepted; remove it from the environment", self._grace)
            self._previous = None
        return self._previous

    async def current(self) -> tuple[str, ...]:
        """Every secret a delivery may be signed with, newest first; empty when none is set."""
        if self._secret:
            candidates = (self._secret, self._previous_value())
        else:
            secret = await self._from_variable()
            if not secret:  # a previous secret alone does not open the door
                return ()
            in_grace = self._clock() - self._replaced_at < self._grace
            candidates = (secret, self._replaced if in_grace else None, self._previous_value())
        return tuple(dict.fromkeys(s for s in candidates if s))

    def _cached_answer(self, now: float) -> str | None | bool:
        """The cached value while it is fresh or the backend is backing off; False: re-read."""
        fresh = self._read_at is not None and now - self._read_at < self._ttl
        if fresh or now < self._retry_at:
            if self._cached is None:
                raise SecretUnavailable(f"Variable {self.variable!r} unreadable (retrying soon)")
            return self._cached
        return False

    async def _from_variable(self) -> str | None:
        if not self.variable:
            return None
        cached = self._cached_answer(self._clock())
        if cached is not False:
            return cached
        if self._refresh.locked() and self._cached is not None:
            # Someone is already asking the backend: the last value serves meanwhile, so a
            # burst after the TTL costs one lookup, not one per request.
            return self._cached
        async with self._refresh:
            now = self._clock()
            cached = self._cached_answer(now)  # refreshed while we waited
            if cached is not False:
                return cached
            return await self._lookup_now(now)

    async def _lookup_now(self, now: float) -> str | None:
        self.lookups += 1
        try:
            value = await anyio.to_thread.run_sync(self._lookup, self.variable)
            check_length(f"Variable {self.variable!r}", value)
        except Exception as exc:  # the backend's own errors vary; the reason is logged
            # Back off, so a slow or failing backend is not called for every delivery.
            self._retry_at = now + (self._ttl if self._cached is not None else FIRST_READ_RETRY)
            log.warning("webhook secret: Variable %r unusable (%s: %s)%s", self.variable,
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
