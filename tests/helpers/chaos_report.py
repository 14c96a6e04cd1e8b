"""The chaos suite's findings: `test-artifacts/chaos.json`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.helpers.paths import REPO
from tests.helpers.timestamps import utc_now

REPORT = REPO / "test-artifacts" / "chaos.json"


class ChaosReport:
    """`test-artifacts/chaos.json`: one entry per fault (when it was injected, the outcome,
    recovery times, duplicates found), rewritten after every test; the suite's duration."""

    def __init__(self, path: Path = REPORT):
        self.path = path
        self.started = time.monotonic()
        self.started_at = utc_now()
        self.entries: list[dict] = []
        self.extra: dict = {}

    @property
    def duration_s(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def add(self, entry: dict) -> None:
        self.entries.append(entry)
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({
            "started_at": self.started_at, "duration_s": self.duration_s,
            **self.extra, "faults": self.entries}, indent=2, sort_keys=False) + "\n")
