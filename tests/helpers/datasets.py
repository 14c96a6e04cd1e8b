"""The real rice images: where they are, their classes, and small copies of them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.helpers.paths import REPO

REAL_DATA = Path(os.environ.get("RICE_REAL_DATA", REPO.parent / "shared" / "rice"))
CLASSES = ["Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag"]
# Images per class per split: enough for a model that classifies well.
SMALL_SUBSET = {"train": 100, "val": 20, "test": 20}


def copy_subset(source: Path, target: Path, per_split: dict[str, int]) -> Path:
    """A split-layout copy with the first N images per class of each split (sorted by name)."""
    for split, count in per_split.items():
        for cls in CLASSES:
            out = target / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for image in sorted((source / split / cls).iterdir())[:count]:
                shutil.copy2(image, out / image.name)
    return target


def file_labelled(source: Path, target: Path, per_class: int) -> dict[str, list[Path]]:
    """What a labeller does: `per_class` images of each class that `target` does not hold yet,
    filed under their class in its train split ({class: the files added})."""
    added = {}
    for cls in CLASSES:
        out = target / "train" / cls
        held = {image.name for image in out.iterdir()}
        fresh = [image for image in sorted((source / "train" / cls).iterdir())
                 if image.name not in held][:per_class]
        added[cls] = [Path(shutil.copy2(image, out / image.name)) for image in fresh]
    return added
