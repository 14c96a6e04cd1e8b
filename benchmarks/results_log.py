"""Append a benchmark record, stamped with the date and the machine, to results/<name>.jsonl."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def record(name: str, values: dict) -> dict:
    stamped = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
               **values}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with (RESULTS_DIR / f"{name}.jsonl").open("a") as handle:
        handle.write(json.dumps(stamped) + "\n")
    print(json.dumps(stamped, indent=2))
    return stamped
