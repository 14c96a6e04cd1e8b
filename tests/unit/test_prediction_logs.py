"""The release zone's reader of the serving containers' log files
(rice_mlops.monitoring.log_reader): what a container could plant there is refused or bounded, never
followed."""

from __future__ import annotations

import os

import pytest

from rice_mlops.monitoring.log_reader import MAX_LINE, LogFileError, log_lines, rotated_logs


def test_rotated_files_come_oldest_first_and_strangers_are_left_out(tmp_path):
    for name in ("predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.10",
                 "predictions.jsonl.2", "predictions.jsonl.old", "other.jsonl"):
        (tmp_path / name).write_text("{}\n")
    assert [p.name for p in rotated_logs(tmp_path)] == [
        "predictions.jsonl.10", "predictions.jsonl.2", "predictions.jsonl.1",
        "predictions.jsonl"]
    assert rotated_logs(tmp_path / "missing") == []


def test_a_link_or_a_fifo_in_place_of_a_log_is_refused_and_a_missing_one_is_empty(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("the worker's own file\n")
    (tmp_path / "link").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo")  # would block a plain open forever
    for name in ("link", "fifo"):
        with pytest.raises(LogFileError, match=name):
            list(log_lines(tmp_path / name))
    assert list(log_lines(tmp_path / "absent")) == []


def test_lines_are_bounded_one_by_one_and_in_all(tmp_path):
    log = tmp_path / "predictions.jsonl"
    log.write_bytes(b"a" * (3 * MAX_LINE) + b"\n" + b"short\n" * 10)
    pieces = list(log_lines(log))
    assert max(len(p) for p in pieces) <= MAX_LINE + 1 and pieces[-1] == b"short\n"
    capped = list(log_lines(log, max_read=2 * MAX_LINE))
    assert sum(len(p) for p in capped) <= 3 * MAX_LINE and b"short\n" not in capped


def test_a_window_reads_at_most_its_budget_newest_files_first(tmp_path):
    """Issue 35: whatever the servers wrote (up to 100 files of 64 MiB per slot), one window
    reads a bounded number of bytes, the newest files of every slot first, and names what it
    left out."""
    from rice_mlops.monitoring.log_reader import window_lines

    slots = []
    for slot in ("blue", "green"):
        directory = tmp_path / slot
        directory.mkdir()
        paths = []
        for age in (2, 1, 0):  # oldest first, as rotated_logs gives them
            path = directory / (f"predictions.jsonl.{age}" if age else "predictions.jsonl")
            path.write_bytes(f"{slot}-{age}\n".encode() * 100)  # 700 or 800 bytes
            paths.append(path)
        slots.append(paths)
    everything: list = []
    total = sum(path.stat().st_size for paths in slots for path in paths)
    assert len(b"".join(window_lines(slots, 10**6, everything))) == total
    assert everything == []
    left_out: list = []
    read = list(window_lines(slots, 1500, left_out))
    assert sum(map(len, read)) <= 1500
    assert {line for line in read} >= {b"blue-0\n", b"green-0\n"}  # the newest of each slot
    assert b"blue-2\n" not in read and b"green-2\n" not in read
    assert slots[0][0] in left_out and slots[1][0] in left_out
