"""Files a zone keeps for itself (the serving state, the watermark, verdicts, references, the
release ledger): written whole or not at all, read with a bound on what they can make a reader
hold. A reader that finds a file over its bound treats it as not one of its own."""

from __future__ import annotations

import os
from pathlib import Path


class TooLarge(ValueError):
    """A zone file over the bound its reader sets."""


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace `path` with `data` in one step (a crash leaves the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    with staged.open("wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staged, path)


def read_bounded(path: Path, max_bytes: int) -> bytes | None:
    """The file's bytes, None when it does not exist; TooLarge past `max_bytes`."""
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    if len(raw) > max_bytes:
        raise TooLarge(f"{path} is over {max_bytes} bytes")
    return raw
