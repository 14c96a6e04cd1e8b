"""Housekeeping against the real engine: stale runs lose their directories and local tags,
kept runs and `latest` stay."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from rice_mlops.release.housekeeping import prune

pytestmark = pytest.mark.integration


def _image(tag: str) -> str:
    """A distinct tiny image (an empty filesystem imported under `tag`); returns its id."""
    empty = subprocess.run(["tar", "cf", "-", "--files-from", "/dev/null"], capture_output=True,
                           check=True).stdout
    subprocess.run(["docker", "import", "--message", uuid.uuid4().hex, "-", tag], input=empty,
                   capture_output=True, check=True)
    return _id(tag)


def _id(tag: str) -> str | None:
    found = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag],
                           capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else None


def test_prune_untags_stale_runs_and_keeps_the_rest(docker_engine, tmp_path):
    name = f"rice-hk-{uuid.uuid4().hex[:8]}"
    registry = "127.0.0.1:1"
    runs = [uuid.uuid4().hex for _ in range(3)]  # oldest first
    for age, run in enumerate(reversed(runs)):
        (tmp_path / run / "image").mkdir(parents=True)
        os.utime(tmp_path / run, (2_000_000 - age, 2_000_000 - age))
    old_id = _image(f"{name}-build:{runs[0]}")
    subprocess.run(["docker", "tag", old_id, f"{registry}/{name}:commit0"], check=True)
    new_id = _image(f"{name}-build:{runs[2]}")
    subprocess.run(["docker", "tag", new_id, f"{registry}/{name}:latest"], check=True)
    mid_id = _image(f"{name}-build:{runs[1]}")
    try:
        report = prune(tmp_path, keep=1, current=runs[2], image_name=name,
                       docker_socket=Path("/var/run/docker.sock"))
        assert sorted(report.removed_dirs) == sorted(runs[:2])
        assert sorted(report.removed_tags) == sorted(
            [f"{name}-build:{runs[0]}", f"{registry}/{name}:commit0", f"{name}-build:{runs[1]}"])
        assert _id(f"{name}-build:{runs[0]}") is None and _id(f"{name}-build:{runs[1]}") is None
        assert _id(f"{registry}/{name}:commit0") is None
        assert _id(f"{name}-build:{runs[2]}") == new_id
        assert _id(f"{registry}/{name}:latest") == new_id
        assert [p.name for p in tmp_path.iterdir()] == [runs[2]]
        # The stale images had no other tag left: the engine deleted them.
        assert subprocess.run(["docker", "image", "inspect", old_id, mid_id],
                              capture_output=True).returncode != 0
    finally:
        subprocess.run(["docker", "rmi", "-f", old_id, mid_id, new_id], capture_output=True)
