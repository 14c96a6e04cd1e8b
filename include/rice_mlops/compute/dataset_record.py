"""Datasets as MLflow records of metadata only: what a run's Datasets panel shows (name,
digest, source, profile) without copying a single image or log line into MLflow."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

DATASET_NAME = "rice-images"
DIGEST_CHARS = 16  # MLflow keeps at most 36; the full fingerprint is the input's tag


def metadata_dataset(name: str, source: str, digest: str, profile: Mapping[str, object]):
    """An MLflow `Dataset` from a local `source` path, with `profile` shown beside it."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    class Described(MetaDataset):
        @property
        def profile(self) -> dict:
            return dict(profile)

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    with warnings.catch_warnings():  # MLflow registers its local source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        resolved = resolve_dataset_source(source)  # "local": the path
    return Described(resolved, name=name, digest=digest[:DIGEST_CHARS])


def image_dataset(root: Path, data_fingerprint: str, counts: dict[str, int]):
    """The training images: the directory, the fingerprint, the split sizes."""
    return metadata_dataset(DATASET_NAME, str(root), data_fingerprint.removeprefix("sha256:"),
                            {"images": sum(counts.values()),
                             **{f"{split}_images": n for split, n in counts.items()}})
