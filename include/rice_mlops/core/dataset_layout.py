"""Find the images of a dataset directory in either supported layout.

Split layout:  ``DIR/{train,val,test}/<Class>/<image>``
Kaggle layout: ``DIR/<Class>/<image>``, split 70/15/15 by a hash of the file name, so that
adding images never moves an existing one to another split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
# Cumulative percentage bounds of the deterministic split: [0,70) train, [70,85) val, rest test.
_SPLIT_BOUNDS = ((70, "train"), (85, "val"), (100, "test"))


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def split_of(file_name: str) -> str:
    """The split a Kaggle-layout file belongs to; depends on its name only."""
    bucket = int.from_bytes(hashlib.sha256(file_name.encode("utf-8")).digest()[:8], "big") % 100
    return next(split for bound, split in _SPLIT_BOUNDS if bucket < bound)


@dataclass
class Dataset:
    """Files of a dataset by split and class, plus every file that is not an image."""

    root: Path
    layout: str  # "split" or "kaggle"
    files: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    non_images: list[Path] = field(default_factory=list)
    stray_files: list[Path] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        names: set[str] = set()
        for by_class in self.files.values():
            names.update(by_class)
        return sorted(names)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            split: {cls: len(paths) for cls, paths in sorted(by_class.items())}
            for split, by_class in self.files.items()
        }

    def examples(self, split: str) -> tuple[list[Path], list[int]]:
        """Paths and integer labels of one split, in a stable order."""
        index = {cls: i for i, cls in enumerate(self.classes)}
        paths: list[Path] = []
        labels: list[int] = []
        for cls, cls_paths in sorted(self.files.get(split, {}).items()):
            paths.extend(cls_paths)
            labels.extend([index[cls]] * len(cls_paths))
        return paths, labels


def _visible_children(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not is_hidden(p.name))


def _images_of(class_dir: Path, dataset: Dataset) -> list[Path]:
    images = []
    for path in sorted(class_dir.rglob("*")):
        if any(is_hidden(part) for part in path.relative_to(class_dir).parts):
            continue
        if path.is_dir():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            dataset.non_images.append(path)
    return images


def _misplaced_images(root_children: list[Path]) -> list[Path]:
    # A README or LICENSE beside the data is documentation; an image there is misplaced.
    return [c for c in root_children if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES]


def discover(root: Path | str) -> Dataset:
    """Read a dataset directory without judging it; `validate` judges.

    Raises FileNotFoundError when the directory does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(root)
    children = _visible_children(root)
    has_splits = any(c.is_dir() and c.name in SPLITS for c in children)
    dataset = Dataset(root=root, layout="split" if has_splits else "kaggle")
    if has_splits:
        for split in SPLITS:
            dataset.files[split] = {}
            split_dir = root / split
            if not split_dir.is_dir():
                continue
            for child in _visible_children(split_dir):
                if child.is_dir():
                    dataset.files[split][child.name] = _images_of(child, dataset)
                else:
                    dataset.stray_files.append(child)
        dataset.stray_files.extend(_misplaced_images(children))
    else:
        dataset.stray_files.extend(_misplaced_images(children))
        dataset.files = {split: {} for split in SPLITS}
        for child in children:
            if not child.is_dir():
                continue
            for split in SPLITS:
                dataset.files[split][child.name] = []
            for image in _images_of(child, dataset):
                dataset.files[split_of(image.name)][child.name].append(image)
    return dataset
