"""The training images as an MLflow dataset: what a run's Datasets panel shows (name, digest,
source, split counts) without copying a single image into MLflow."""

from __future__ import annotations

import json
from pathlib import Path

DATASET_NAME = "rice-images"
DIGEST_CHARS = 16  # MLflow keeps at most 36; the full fingerprint is the input's tag


def image_dataset(root: Path, data_fingerprint: str, counts: dict[str, int]):
    """An MLflow `Dataset` of metadata only: the directory, the fingerprint, the split sizes."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    class ImageDirectory(MetaDataset):
        @property
        def profile(self) -> dict:
            return {"images": sum(counts.values()), **{f"{s}_images": n
                                                      for s, n in counts.items()}}

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    with warnings.catch_warnings():  # MLflow registers its local source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(root))  # "local": the directory's path
    digest = data_fingerprint.removeprefix("sha256:")[:DIGEST_CHARS]
    return ImageDirectory(source, name=DATASET_NAME, digest=digest)
