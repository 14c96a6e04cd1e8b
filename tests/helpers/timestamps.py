"""Timestamps as the chaos findings record them and as the REST API answers them."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse_time(value: str | None) -> float | None:
    """An ISO timestamp from the REST API as epoch seconds."""
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp()  # 3.11 reads the trailing Z
