"""The synthetic generator: layout, counts, reproducibility and the class statistics."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from rice_mlops.compute.data import validate
from rice_mlops.compute.data.synth import CLASS_STATS, draw_grain, generate


def _digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.jpg")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_layout_and_counts(tmp_path):
    counts = generate(tmp_path, per_class=10, seed=0)
    assert counts["train"] == dict.fromkeys(CLASS_STATS, 10)
    assert counts["val"] == dict.fromkeys(CLASS_STATS, 2)
    dataset = validate(tmp_path, min_per_class=2)
    assert dataset.layout == "split"
    assert dataset.classes == sorted(CLASS_STATS)
    with Image.open(next((tmp_path / "test" / "Basmati").iterdir())) as image:
        assert image.format == "JPEG" and image.size == (250, 250) and image.mode == "RGB"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    generate(tmp_path / "a", per_class=4, seed=7)
    generate(tmp_path / "b", per_class=4, seed=7)
    generate(tmp_path / "c", per_class=4, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def _axes(image: np.ndarray) -> tuple[float, float, np.ndarray, tuple[float, float]]:
    mask = image.mean(axis=2) > 40
    ys, xs = np.nonzero(mask)
    coords = np.stack([xs, ys]).astype(np.float64)
    eigen = np.sort(np.linalg.eigvalsh(np.cov(coords)))[::-1]
    major, minor = 4 * np.sqrt(eigen)  # full axes of a filled ellipse
    return major, minor, image[mask].mean(axis=0), (xs.mean(), ys.mean())


@pytest.mark.parametrize("cls", sorted(CLASS_STATS))
def test_class_statistics_roughly_as_specified(cls):
    stats = CLASS_STATS[cls]
    rng = np.random.default_rng(0)
    measured = [_axes(draw_grain(stats, rng)) for _ in range(60)]
    major = np.mean([m[0] for m in measured])
    minor = np.mean([m[1] for m in measured])
    rgb = np.mean([m[2] for m in measured], axis=0)
    expected_scale = 1 + 0.14 * stats.large_tinted_share  # Jasmine's larger share
    assert major == pytest.approx(stats.major[0] * expected_scale, rel=0.08)
    assert minor == pytest.approx(stats.minor[0] * expected_scale, rel=0.10)
    assert np.abs(rgb - np.array(stats.rgb)).max() < 25
    centres = np.array([m[3] for m in measured])
    assert np.abs(centres - 125).max() < 6


def test_grains_never_touch_the_border():
    rng = np.random.default_rng(1)
    for cls, stats in CLASS_STATS.items():
        for _ in range(20):
            image = draw_grain(stats, rng)
            border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
            assert border.max() < 30, cls


def test_per_class_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        generate(tmp_path, per_class=0)
