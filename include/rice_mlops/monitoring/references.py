"""The drift references the monitoring trusts: the release zone's own.

One per model version, computed in the release zone from the TFLite bytes it measured before
building (`rice_mlops.release.image.prepare_context`, on the test split), and kept in
RICE_RELEASE_DIR/references, which no other zone mounts. The reference the gate logs to MLflow
stays there for people to read, but the compute zone writes MLflow too (a reference of a few
rows hides drift, one of a single class raises it every day), so the monitoring never reads it.
"""

from __future__ import annotations

from pathlib import Path

from rice_mlops.core.zone_files import TooLarge, read_bounded, write_atomic
from rice_mlops.monitoring.drift import DriftReferenceError, Reference

MAX_BYTES = 32 << 20  # 100,000 rows of nine numbers is about 20 MB of JSON
DIRECTORY = "references"


def reference_path(release_root: Path, version: str) -> Path:
    if not str(version).isdigit():
        raise DriftReferenceError(f"model version {version!r} is not a version number")
    return Path(release_root) / DIRECTORY / f"v{int(version)}.json"


def keep(source: Path, release_root: Path, version: str) -> Path:
    """Copy the reference prepare_context wrote to where the monitoring reads it, atomically
    (a rebuild of the same version replaces it with what was measured again)."""
    target = reference_path(release_root, version)
    write_atomic(target, Path(source).read_bytes())
    return target


def load(release_root: Path, version: str) -> Reference:
    """The version's reference, bounded in size and checked to be this version's."""
    path = reference_path(release_root, version)
    try:
        raw = read_bounded(path, MAX_BYTES)
    except TooLarge as exc:
        raise DriftReferenceError(f"{exc}: not a drift reference") from None
    if raw is None:
        raise DriftReferenceError(
            f"no drift reference of v{version} in {path.parent} (the release zone records one "
            "when it builds a version: versions built before that have none; ship a new one)")
    reference = Reference.from_json(raw)
    if reference.model_version != str(version):
        raise DriftReferenceError(f"{path} is the reference of v{reference.model_version}, "
                                  f"not of v{version}")
    return reference
