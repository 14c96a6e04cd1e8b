"""What a long-lived pipeline host must not accumulate: one staging directory (model artifacts
and image build context) and one set of local image tags per training run.

The newest `keep` runs stay, so their tasks can still be re-run (a cleared push re-publishes
its run's own local build); older ones go. Pushed images stay in the registry.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow run ids name the per-run staging directories


@dataclass
class PruneReport:
    kept: list[str] = field(default_factory=list)
    removed_dirs: list[str] = field(default_factory=list)
    removed_tags: list[str] = field(default_factory=list)


def _run_dirs(staging_root: Path) -> list[Path]:
    return [p for p in staging_root.iterdir() if p.is_dir() and _RUN_ID.fullmatch(p.name)]


def stale_run_dirs(staging_root: Path, keep: int, current: str | None = None) -> list[Path]:
    """Per-run directories beyond the newest `keep` (by modification time); never `current`."""
    runs = sorted(_run_dirs(staging_root), key=lambda p: p.stat().st_mtime, reverse=True)
    return [p for p in runs[max(keep, 0):] if p.name != current]


def stale_tags(image_tags: list[str], build_tag: str) -> list[str]:
    """Tags of one stale run's local image to drop: its build tag and its registry names,
    never `latest`; only the build tag when another run's build tag shares the image."""
    prefix = build_tag.rpartition(":")[0] + ":"
    if any(tag.startswith(prefix) and tag != build_tag for tag in image_tags):
        return [build_tag]
    return [tag for tag in image_tags if tag == build_tag or not tag.endswith(":latest")]


def prune(staging_root: Path, keep: int, current: str | None, image_name: str,
          docker_socket: Path | None) -> PruneReport:
    """Remove stale run directories and their local images. Best effort: an engine that is
    down or refuses is logged and the directories still go, so tidying never fails a run."""
    from rice_mlops.release.image import run_tag

    report = PruneReport()
    stale = stale_run_dirs(staging_root, keep, current)
    report.kept = sorted(p.name for p in _run_dirs(staging_root) if p not in stale)
    client = _docker(docker_socket) if stale else None
    try:
        for run_dir in stale:
            if client is not None:
                report.removed_tags += _untag(client, run_tag(image_name, run_dir.name))
            shutil.rmtree(run_dir, ignore_errors=True)
            if not run_dir.exists():
                report.removed_dirs.append(run_dir.name)
            else:
                log.warning("could not remove %s", run_dir)
    finally:
        if client is not None:
            client.close()
    return report


def _docker(socket: Path | None):
    if socket is None or not socket.exists():  # no engine on this worker: directories only
        return None
    import docker

    try:
        return docker.DockerClient(base_url=f"unix://{socket}")
    except docker.errors.DockerException as exc:  # engine down, or no permission on the socket
        log.warning("local image tags not pruned: %s", exc)
        return None


def _untag(client, build_tag: str) -> list[str]:
    import docker.errors

    try:
        image = client.images.get(build_tag)
    except docker.errors.ImageNotFound:
        return []
    except docker.errors.DockerException as exc:
        log.warning("kept %s: %s", build_tag, exc)
        return []
    removed = []
    for tag in stale_tags(image.tags, build_tag):
        try:
            # A registry tag may have moved to a newer build of the same commit since.
            if client.images.get(tag).id != image.id:
                continue
            client.images.remove(tag)  # untags; layers go with the last tag
            removed.append(tag)
        except docker.errors.DockerException as exc:  # e.g. a container still uses it
            log.warning("kept %s: %s", tag, getattr(exc, "explanation", None) or exc)
    return removed
