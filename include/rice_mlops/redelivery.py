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


def find_hook(client, repository: str, hook_id: str = "") -> int | None:
    """The repository webhook that points at our receiver (or the configured id)."""
    if hook_id:
        return int(hook_id)
    for hook in client.json("GET", f"/repos/{repository}/hooks"):
        if str((hook.get("config") or {}).get("url", "")).rstrip("/").endswith(WEBHOOK_PATH):
            return int(hook["id"])
    return None


def redeliver_failed(client, repository: str, hook_id: int, *, now: datetime | None = None,
                     lookback: timedelta = timedelta(hours=24)) -> list[int]:
    """Ask GitHub to redeliver every failed push delivery; returns the ids asked for."""
    deliveries = client.json("GET", f"/repos/{repository}/hooks/{hook_id}/deliveries",
                             params={"per_page": 100})
    ids = to_redeliver(deliveries, now=now or datetime.now(UTC), lookback=lookback)
    for delivery_id in ids:
        client.json("POST", f"/repos/{repository}/hooks/{hook_id}/deliveries/{delivery_id}"
                            "/attempts", expect=(202,))
        log.info("asked GitHub to redeliver delivery %s", delivery_id)
    return ids
