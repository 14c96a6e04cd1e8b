"""Which failed webhook deliveries the recovery DAG asks GitHub to redeliver."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rice_mlops.publication.redelivery import to_redeliver

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _d(id_, guid, minutes_ago, code, event="push", redelivery=False):
    when = (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")
    return {"id": id_, "guid": guid, "delivered_at": when, "status_code": code,
            "event": event, "redelivery": redelivery}


def test_only_the_newest_failed_attempt_of_each_push_is_redelivered():
    deliveries = [
        _d(1, "a", 30, 503), _d(2, "a", 10, 200, redelivery=True),  # recovered already
        _d(3, "b", 20, 503), _d(4, "b", 5, 502, redelivery=True),   # still failing: newest
        _d(5, "c", 15, 0),                                          # no answer at all
        _d(6, "d", 12, 200),                                        # fine
        _d(7, "e", 11, 400),                                        # refused: not retried
        _d(8, "f", 9, 503, event="ping"),                           # not a push
        _d(9, "g", 60 * 30, 503),                                   # beyond the lookback
    ]
    assert to_redeliver(deliveries, now=NOW) == [5, 4]  # oldest first
    assert to_redeliver(deliveries, now=NOW, limit=1) == [5]
    assert to_redeliver([], now=NOW) == []
