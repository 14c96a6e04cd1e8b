"""Reading the serving servers' prediction logs from the release zone. A serving container
writes that directory, so a file is opened without following a link (a link could name any
file of the reading worker), must be a regular file, and is read in bounded lines with a cap
on the bytes in all: whatever the container wrote, the reader holds a bounded amount."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

LOG_FILE = "predictions.jsonl"  # the server's (rice_mlops.serving.prediction_log)
MAX_LINE = 64 * 1024
MAX_READ = 64 * 1024 * 1024  # more than the server's own cap of one file
_ROTATED = re.compile(rf"{re.escape(LOG_FILE)}(\.[1-9][0-9]?)?")


class LogFileError(RuntimeError):
    """A log path is a link or not a regular file; the message names it."""


def log_lines(path: Path, *, max_read: int = MAX_READ) -> Iterator[bytes]:
    """The file's lines, each at most MAX_LINE + 1 bytes (a longer one comes in pieces that
    no JSON parser accepts), at most `max_read` bytes in all; nothing when it is missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    except OSError as exc:  # ELOOP: a link where the log should be
        raise LogFileError(f"{path} is not the server's log file ({exc})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise LogFileError(f"{path} is not a regular file")
        read = 0
        while read < max_read and (line := handle.readline(MAX_LINE + 1)):
            read += len(line)
            yield line


def window_lines(slots: list[list[Path]], budget: int, left_out: list[Path]) -> Iterator[bytes]:
    """The lines of every slot's log files (each slot's list oldest first, as `rotated_logs`
    gives it), the newest files of all slots first, at most `budget` bytes in all: a window
    holds a bounded amount whatever the servers wrote. Files not read to their end (the one the
    budget ran out in, and every older one) are added to `left_out`."""
    newest_first = [list(reversed(paths)) for paths in slots]
    ordered = [paths[rank] for rank in range(max(map(len, newest_first), default=0))
               for paths in newest_first if rank < len(paths)]
    remaining = budget
    for path in ordered:
        if remaining <= 0:
            left_out.append(path)
            continue
        for line in log_lines(path, max_read=min(MAX_READ, remaining)):
            remaining -= len(line)
            yield line
        if remaining <= 0:
            left_out.append(path)


def rotated_logs(directory: Path) -> list[Path]:
    """A slot's log files, oldest first (predictions.jsonl.4 ... .1, then the current one)."""
    try:
        names = [entry.name for entry in os.scandir(directory) if _ROTATED.fullmatch(entry.name)]
    except FileNotFoundError:
        return []
    order = sorted(names, key=lambda name: -int(name.rsplit(".", 1)[1])
                   if name != LOG_FILE else 0)
    return [directory / name for name in order]
