"""A stable identity for a dataset: equal content and paths give an equal fingerprint."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rice_mlops.core.dataset_layout import Dataset

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(dataset: Dataset) -> str:
    """sha256 over every image's relative path and content hash, in sorted path order.

    Relative paths use '/' so the value is the same on every OS and wherever the dataset lives.
    """
    entries = sorted(
        (path.relative_to(dataset.root).as_posix(), path)
        for by_class in dataset.files.values()
        for paths in by_class.values()
        for path in paths
    )
    digest = hashlib.sha256()
    for relative, path in entries:
        digest.update(relative.encode("utf-8"))
        digest.update(b"\0")
        digest.update(file_sha256(path).encode("ascii"))
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()
