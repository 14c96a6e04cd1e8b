"""No push lost: GitHub never retries a failed webhook delivery by itself, so a small DAG
lists the repository webhook's recent deliveries and asks GitHub to redeliver those whose
latest attempt failed (5xx, or no answer at all). The receiver deduplicates by pushed content,
so a redelivery can never start a second run for one commit."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/github"


def _failed(delivery: Mapping) -> bool:
    code = delivery.get("status_code") or 0
    return code == 0 or code >= 500  # 0: GitHub got no HTTP answer (timeout, refused)


def _when(delivery: Mapping) -> datetime:
    return datetime.fromisoformat(str(delivery["delivered_at"]).replace("Z", "+00:00"))


def to_redeliver(deliveries: Iterable[Mapping], *, now: datetime,
                 lookback: timedelta = timedelta(hours=24), limit: int = 50) -> list[int]:
    """Ids of the newest attempt of every push delivery (grouped by `guid`: redeliveries keep
    it) whose newest attempt failed and is younger than `lookback`. Pure."""
    newest: dict[str, Mapping] = {}
    for delivery in deliveries:
        if delivery.get("event") != "push":
            continue
        guid = delivery["guid"]
        if guid not in newest or _when(delivery) > _when(newest[guid]):
            newest[guid] = delivery
    failed = [d for d in newest.values() if _failed(d) and now - _when(d) <= lookback]
    failed.sort(key=_when)
    return [int(d["id"]) for d in failed[:limit]]


def find_hook(repo, hook_id: str = "") -> int | None:
    """The repository webhook that points at our receiver (or the configured id); `repo` is
    PyGithub's Repository."""
    if hook_id:
        return int(hook_id)
    for hook in repo.get_hooks():
        if str((hook.config or {}).get("url", "")).rstrip("/").endswith(WEBHOOK_PATH):
            return int(hook.id)
    return None


def redeliver_failed(repo, hook_id: int, *, now: datetime | None = None,
                     lookback: timedelta = timedelta(hours=24),
                     scanned: int = 300) -> list[int]:
    """Ask GitHub to redeliver every failed push delivery among the newest `scanned`;
    returns the ids asked for. (PyGithub lists deliveries but has no call for a redelivery
    attempt: that POST goes through its requester, on the repository's own URL.)"""
    from itertools import islice

    deliveries = [d.raw_data for d in islice(repo.get_hook_deliveries(hook_id), scanned)]
    ids = to_redeliver(deliveries, now=now or datetime.now(UTC), lookback=lookback)
    for delivery_id in ids:
        repo.requester.requestJsonAndCheck(
            "POST", f"{repo.url}/hooks/{hook_id}/deliveries/{delivery_id}/attempts")
        log.info("asked GitHub to redeliver delivery %s", delivery_id)
    return ids
