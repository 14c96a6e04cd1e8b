"""Synthetic rice grains drawn with the per-class statistics measured on the real dataset.

The embedded default for a machine without the Rice Image Dataset: one grain per 250x250 JPEG,
centred on black at a uniform random angle, with the class's size, aspect and colour
(DESIGN.md, "The rice data").
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rice_mlops.core.dataset_layout import SPLITS

IMAGE_SIZE = 250


@dataclass(frozen=True)
class GrainStats:
    major: tuple[float, float]  # full axis length in px: mean, standard deviation
    minor: tuple[float, float]
    rgb: tuple[int, int, int]
    chalky: bool = False  # Arborio's opaque white patches
    large_tinted_share: float = 0.0  # Jasmine: share of grains ~30 % larger and cyan-tinted


CLASS_STATS: dict[str, GrainStats] = {
    "Arborio": GrainStats((138, 8), (70, 5), (212, 213, 218), chalky=True),
    "Basmati": GrainStats((204, 14), (49, 4), (218, 219, 238)),
    "Ipsala": GrainStats((197, 10), (92, 6), (236, 237, 233)),
    "Jasmine": GrainStats((160, 24), (52, 7), (211, 219, 228), large_tinted_share=0.3),
    "Karacadag": GrainStats((115, 6), (72, 3), (205, 205, 225)),
}
# Ratio of split sizes in the real dataset's published split (1000 / 200 / 200 per class).
SPLIT_SHARE = {"train": 1.0, "val": 0.2, "test": 0.2}

_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)


def draw_grain(stats: GrainStats, rng: np.random.Generator) -> np.ndarray:
    """One 250x250 RGB uint8 image of a grain."""
    major = max(20.0, rng.normal(*stats.major))
    minor = min(major, max(10.0, rng.normal(*stats.minor)))
    colour = np.array(stats.rgb, dtype=np.float32)
    if rng.random() < stats.large_tinted_share:
        major, minor = major * 1.14, minor * 1.14  # area x1.3
        colour += np.array([-12.0, 4.0, 10.0], dtype=np.float32)
    major = min(major, IMAGE_SIZE - 20.0)  # grains never touch the border
    cx, cy = IMAGE_SIZE / 2 + rng.uniform(-3, 3, size=2)
    angle = rng.uniform(0.0, math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    u = ((_XX - cx) * cos + (_YY - cy) * sin) / (major / 2)
    v = (-(_XX - cx) * sin + (_YY - cy) * cos) / (minor / 2)
    radius = np.sqrt(u * u + v * v)
    # One-pixel soft edge, as a camera gives, instead of a jagged mask.
    edge_px = 2.0 / minor
    coverage = np.clip((1.0 - radius) / edge_px + 0.5, 0.0, 1.0)
    shading = 0.82 + 0.18 * np.sqrt(np.clip(1.0 - radius * radius, 0.0, 1.0))
    pixel = colour[None, None, :] * shading[..., None]
    if stats.chalky:
        pu, pv = rng.uniform(-0.5, 0.5), rng.uniform(-0.4, 0.4)
        spread = rng.uniform(0.15, 0.3)
        patch = np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * spread**2))
        pixel += (250.0 - pixel) * (0.8 * patch)[..., None]
    pixel += rng.normal(0.0, 4.0, size=pixel.shape).astype(np.float32)
    image = pixel * coverage[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def generate(out_dir: Path | str, per_class: int, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write a split-layout dataset; `per_class` images per class in train, 20 % in val and test.

    The same seed gives byte-identical files. Returns the counts written.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    out = Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    for split_index, split in enumerate(SPLITS):
        n = max(1, round(per_class * SPLIT_SHARE[split]))
        counts[split] = {}
        for class_index, (cls, stats) in enumerate(CLASS_STATS.items()):
            rng = np.random.default_rng([seed, split_index, class_index])
            target = out / split / cls
            target.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(draw_grain(stats, rng)).save(
                    target / f"{cls} ({i + 1}).jpg", quality=92
                )
            counts[split][cls] = n
    return counts


def ensure_synthetic(root: Path | str, per_class: int = 150, seed: int = 0) -> Path:
    """The embedded default dataset under `root`, generated once (atomically) and reused."""
    target = Path(root) / f"synthetic-seed{seed}-n{per_class}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        generate(partial, per_class, seed)
        os.chmod(partial, 0o755)
        os.rename(partial, target)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not target.is_dir():  # another worker finishing first is fine; anything else is not
            raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target
