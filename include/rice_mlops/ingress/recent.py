"""Triggers once per run id: a push replayed or redelivered while its trigger is in flight, or
soon after, is answered without another REST call.

The signature covers only the body, so anyone who captured one signed delivery can resend it at
line rate, and GitHub's redeliveries repeat it too. Each resend used to cost a dagRun insert
attempt in the metadata database on the API server that also serves the UI: under 20 such
deliveries a second while a run trained on the same two cores, answers took 5 s at the median
and 197 of 1,200 timed out (tests/chaos/test_run_under_load.py). Bounded in entries and in
time: a run deleted since is asked of the REST API again once its entry expires.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from rice_mlops.core.airflow_rest import TriggerResult
from rice_mlops.ingress.settings import RECENT_SECONDS

MAX_RECENT = 4096

Trigger = Callable[[str, str, dict], Awaitable[TriggerResult]]


class OncePerRun:
    """`trigger(dag_id, run_id, conf)` through `call`, at most once per run id at a time and
    not again for `ttl` seconds after it succeeded; only one event loop uses it (no lock)."""

    def __init__(self, call: Trigger, ttl: float = RECENT_SECONDS, max_entries: int = MAX_RECENT,
                 clock: Callable[[], float] = time.monotonic):
        self._call = call
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._done: OrderedDict[str, float] = OrderedDict()  # run id -> expiry, oldest first
        self._pending: dict[str, asyncio.Task[TriggerResult]] = {}

    def _recent(self, run_id: str) -> bool:
        expiry = self._done.get(run_id)
        if expiry is None:
            return False
        if expiry <= self._clock():
            del self._done[run_id]
            return False
        return True

    def _remember(self, run_id: str) -> None:
        self._done[run_id] = self._clock() + self._ttl
        self._done.move_to_end(run_id)
        while len(self._done) > self._max:
            self._done.popitem(last=False)

    def _settled(self, run_id: str, task: asyncio.Task[TriggerResult]) -> None:
        self._pending.pop(run_id, None)
        if not task.cancelled() and task.exception() is None:
            self._remember(run_id)

    async def trigger(self, dag_id: str, run_id: str, conf: dict) -> TriggerResult:
        if self._recent(run_id):
            return TriggerResult(run_id, created=False)
        pending = self._pending.get(run_id)
        if pending is not None:
            # Shielded: a caller that goes away does not cancel the trigger the others await.
            await asyncio.shield(pending)  # its failure is theirs too (503: redeliver)
            return TriggerResult(run_id, created=False)
        task = asyncio.ensure_future(self._call(dag_id, run_id, conf))
        self._pending[run_id] = task
        task.add_done_callback(lambda done: self._settled(run_id, done))
        return await asyncio.shield(task)
