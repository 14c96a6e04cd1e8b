"""Every validation problem kind is found, and all of them are reported in one error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rice_mlops.compute.data import DataValidationError, validate


def _jpeg(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


def _good(root: Path, classes=("Arborio", "Basmati"), per=3) -> Path:
    for split in ("train", "val", "test"):
        for cls in classes:
            for i in range(per):
                _jpeg(root / split / cls / f"{cls} ({i}).jpg", i)
    return root


def _problems(root: Path, **kwargs) -> list[str]:
    with pytest.raises(DataValidationError) as caught:
        validate(root, **kwargs)
    return [f"{p.path}|{p.problem}|{p.fix}" for p in caught.value.problems]


def test_good_dataset_passes_with_spaces_and_parentheses(tmp_path):
    dataset = validate(_good(tmp_path), min_per_class=3)
    assert dataset.counts()["train"] == {"Arborio": 3, "Basmati": 3}


def test_missing_directory(tmp_path):
    problems = _problems(tmp_path / "absent")
    assert len(problems) == 1
    assert "does not exist" in problems[0] and "absent" in problems[0]


def test_truncated_and_unreadable_images(tmp_path):
    root = _good(tmp_path)
    victim = root / "train" / "Arborio" / "Arborio (0).jpg"
    victim.write_bytes(victim.read_bytes()[:200])
    (root / "val" / "Basmati" / "Basmati (0).jpg").write_bytes(b"this is not a jpeg")
    problems = _problems(root, min_per_class=3)
    assert len(problems) == 2
    assert any("Arborio (0).jpg" in p and "truncated" in p for p in problems)
    assert any("Basmati (0).jpg" in p and "not a readable image" in p for p in problems)


def test_non_image_file_and_stray_file(tmp_path):
    root = _good(tmp_path)
    (root / "test" / "Arborio" / "notes.txt").write_text("hello")
    (root / "train" / "README").write_text("stray")
    problems = _problems(root, min_per_class=3)
    assert any("notes.txt" in p and "not an image file" in p for p in problems)
    assert any("README" in p and "outside any class folder" in p for p in problems)


def test_empty_class(tmp_path):
    root = _good(tmp_path)
    for image in (root / "val" / "Basmati").iterdir():
        image.unlink()
    problems = _problems(root, min_per_class=3)
    assert problems == [f"{root / 'val' / 'Basmati'}|class 'Basmati' has no images in val|"
                        "add images or remove the class from every split"]


def test_class_sets_differ_between_splits(tmp_path):
    root = _good(tmp_path)
    _jpeg(root / "train" / "Jasmine" / "Jasmine (1).jpg")
    for i in range(1, 3):
        _jpeg(root / "train" / "Jasmine" / f"Jasmine ({i + 1}).jpg", i)
    problems = _problems(root, min_per_class=3)
    missing = [p for p in problems if "missing from" in p]
    assert len(missing) == 2  # val and test
    assert all("'Jasmine'" in p and "present in train" in p for p in missing)


def test_too_few_images_per_class(tmp_path):
    root = _good(tmp_path, per=2)
    problems = _problems(root, min_per_class=3)
    assert len(problems) == 6
    assert all("only 2 image(s)" in p and "at least 3 needed" in p for p in problems)


def test_missing_split_directory(tmp_path):
    root = _good(tmp_path)
    for image in (root / "test").rglob("*.jpg"):
        image.unlink()
    for folder in sorted((root / "test").rglob("*"), reverse=True):
        folder.rmdir()
    (root / "test").rmdir()
    problems = _problems(root, min_per_class=3)
    assert any("split directory is missing" in p for p in problems)


def test_all_problems_are_reported_together(tmp_path):
    root = _good(tmp_path)
    (root / "train" / "Arborio" / "x.gif").write_text("gif?")
    (root / "val" / "Basmati" / "Basmati (0).jpg").write_bytes(b"")
    for image in (root / "test" / "Arborio").iterdir():
        image.unlink()
    with pytest.raises(DataValidationError) as caught:
        validate(root, min_per_class=3)
    message = str(caught.value)
    assert "3 problem(s)" in message
    assert "x.gif" in message and "Basmati (0).jpg" in message and "no images in test" in message


def test_empty_root_has_no_classes(tmp_path):
    problems = _problems(tmp_path)
    assert "no class folders found" in problems[0]


def test_real_dataset_validates(real_data):
    dataset = validate(real_data)
    assert sum(dataset.counts()["test"].values()) == 1000


def test_bombs_oversize_images_and_lying_names_are_reported_together(tmp_path):
    root = _good(tmp_path, per=3)
    bomb = root / "train" / "Arborio" / "bomb.png"  # 210 megapixels in ~200 KB
    Image.new("L", (15000, 14000)).save(bomb)
    big = root / "train" / "Basmati" / "big.jpg"
    Image.new("RGB", (300, 300)).save(big)
    gif = root / "val" / "Arborio" / "gif.png"
    Image.new("RGB", (30, 30)).save(gif, format="GIF")
    problems = _problems(root, min_per_class=3, max_pixels=250 * 250)
    assert any(p.startswith(f"{bomb}|decompression bomb refused") or
               p.startswith(f"{bomb}|15000x14000") for p in problems), problems
    assert any(p.startswith(f"{big}|300x300 = 90,000 pixels, above the cap of 62,500")
               for p in problems), problems
    assert any(p.startswith(f"{gif}|content is GIF, not the PNG its name says")
               for p in problems), problems
    assert len(problems) == 3


def test_a_bomb_is_refused_by_pillow_even_under_a_high_cap(tmp_path):
    root = _good(tmp_path, per=3)
    bomb = root / "test" / "Basmati" / "bomb.png"
    Image.new("L", (15000, 14000)).save(bomb)
    problems = _problems(root, min_per_class=3, max_pixels=10**9)
    assert problems == [f"{bomb}|decompression bomb refused (Image size (210000000 pixels) "
                        "exceeds limit of 178956970 pixels, could be decompression bomb DOS "
                        "attack.)|replace or delete the file"]


def test_a_named_pipe_is_reported_instead_of_blocking(tmp_path):
    import os

    root = _good(tmp_path, per=3)
    fifo = root / "train" / "Arborio" / "pipe.jpg"
    os.mkfifo(fifo)
    assert _problems(root, min_per_class=3) == [
        f"{fifo}|not a regular file (a pipe, socket or device)|replace or delete the file"]
