"""Check a dataset before any training and report every problem at once."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from rice_mlops.core.dataset_layout import SPLITS, Dataset, discover

# The real images are 250x250; 4096x4096 leaves room for any camera crop a user may add. One
# bound on an image everywhere: the inference function refuses the same.
from rice_mlops.serving.inference import MAX_PIXELS

DEFAULT_MIN_PER_CLASS = 5

SUFFIX_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


@dataclass(frozen=True)
class Problem:
    path: Path
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem} -> {self.fix}"


class DataValidationError(ValueError):
    """Raised with every problem found in a dataset; nothing was trained."""

    def __init__(self, root: Path, problems: list[Problem]):
        self.root = root
        self.problems = problems
        lines = [f"dataset {root} is not usable ({len(problems)} problem(s)):"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


def image_problem(path: Path, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why an image file cannot be used, or None when it decodes completely.

    The format is read from the content, not the name, and the pixel count from the header
    before anything is decoded: a decompression bomb costs a header read, not gigabytes.
    """
    expected = SUFFIX_FORMATS.get(path.suffix.lower())
    if not path.is_file():  # opening a named pipe would block the task until its timeout
        return "not a regular file (a pipe, socket or device)"
    try:
        with Image.open(path) as image:
            if expected and image.format != expected:
                return (f"content is {image.format or 'unknown'}, not the {expected} its name "
                        "says")
            pixels = image.width * image.height
            if pixels > max_pixels:
                return (f"{image.width}x{image.height} = {pixels:,} pixels, above the cap of "
                        f"{max_pixels:,}")
            image.load()  # decodes every byte: a truncated file fails here, not at verify()
            if image.mode not in ("RGB", "RGBA", "L", "P", "LA"):
                return f"unsupported colour mode {image.mode}"
    except Image.DecompressionBombError as exc:  # not an OSError: caught on its own
        return f"decompression bomb refused ({exc})"
    except UnidentifiedImageError:
        return "not a readable image (unknown or corrupt format)"
    except OSError as exc:  # PIL reports truncation and decoder errors as OSError
        return f"unreadable or truncated image ({exc})"
    return None


def _structure_problems(dataset: Dataset, min_per_class: int) -> list[Problem]:
    problems: list[Problem] = []
    root = dataset.root
    if not dataset.classes:
        problems.append(
            Problem(
                root,
                "no class folders found",
                "lay the images out as <Class>/<image> or {train,val,test}/<Class>/<image>",
            )
        )
        return problems
    if dataset.layout == "split":
        for split in SPLITS:
            if not (root / split).is_dir():
                problems.append(
                    Problem(root / split, "split directory is missing",
                            f"create {split}/ with one folder per class")
                )
    for split, by_class in dataset.files.items():
        if dataset.layout == "split" and not (root / split).is_dir():
            continue
        for cls in dataset.classes:
            where = root / split / cls if dataset.layout == "split" else root / cls
            if cls not in by_class:
                present = sorted(s for s, b in dataset.files.items() if cls in b)
                problems.append(
                    Problem(where, f"class {cls!r} is missing from {split} "
                            f"(present in {', '.join(present)})",
                            "every split must hold the same class folders")
                )
                continue
            count = len(by_class[cls])
            if count == 0:
                problems.append(Problem(where, f"class {cls!r} has no images in {split}",
                                        "add images or remove the class from every split"))
            elif count < min_per_class:
                problems.append(
                    Problem(where, f"class {cls!r} has only {count} image(s) in {split}, "
                            f"at least {min_per_class} needed",
                            "add images (or lower the minimum with --min-per-class)")
                )
    for path in dataset.non_images:
        problems.append(Problem(path, "not an image file (expected .jpg, .jpeg or .png)",
                                "move it out of the dataset or convert it"))
    for path in dataset.stray_files:
        problems.append(Problem(path, "file outside any class folder",
                                "move it into a class folder or out of the dataset"))
    return problems


def validate(
    data_dir: Path | str,
    *,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    check_images: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> Dataset:
    """Discover and check a dataset; return it when usable, else raise DataValidationError."""
    root = Path(data_dir)
    try:
        dataset = discover(root)
    except FileNotFoundError:
        raise DataValidationError(
            root,
            [Problem(root, "dataset directory does not exist",
                     "pass an existing directory, or omit it to use the synthetic default")],
        ) from None
    problems = _structure_problems(dataset, min_per_class)
    if check_images:
        images = [p for by_class in dataset.files.values() for ps in by_class.values() for p in ps]
        workers = min(8, (os.cpu_count() or 1) * 2)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            reasons = pool.map(lambda path: image_problem(path, max_pixels), images)
            for path, reason in zip(images, reasons, strict=True):
                if reason:
                    problems.append(Problem(path, reason, "replace or delete the file"))
    if problems:
        raise DataValidationError(root, problems)
    return dataset
