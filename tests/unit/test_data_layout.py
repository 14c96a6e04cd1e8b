"""Discovery of both layouts and the deterministic 70/15/15 split."""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rice_mlops.compute.data import discover, split_of
from rice_mlops.compute.data.synth import CLASS_STATS, draw_grain


def _write_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(draw_grain(CLASS_STATS["Ipsala"], rng)).save(path)


def test_split_of_depends_only_on_the_name():
    assert split_of("Arborio (1).jpg") == split_of("Arborio (1).jpg")
    names = [f"Basmati ({i}).jpg" for i in range(5000)]
    shares = collections.Counter(split_of(n) for n in names)
    assert abs(shares["train"] / 5000 - 0.70) < 0.03
    assert abs(shares["val"] / 5000 - 0.15) < 0.03
    assert abs(shares["test"] / 5000 - 0.15) < 0.03


def test_kaggle_layout_is_split_by_name_and_adding_images_moves_none(tmp_path):
    for i in range(30):
        _write_image(tmp_path / "Ipsala" / f"Ipsala ({i}).jpg", i)
    before = discover(tmp_path)
    assert before.layout == "kaggle"
    placed = {p.name: split for split, by in before.files.items() for p in by["Ipsala"]}
    assert len(placed) == 30
    for i in range(30, 60):
        _write_image(tmp_path / "Ipsala" / f"Ipsala ({i}).jpg", i)
    after = discover(tmp_path)
    moved = {p.name: split for split, by in after.files.items() for p in by["Ipsala"]}
    assert all(moved[name] == split for name, split in placed.items())
    assert len(moved) == 60


def test_split_layout_reads_classes_and_ignores_hidden_files(tmp_path):
    for split in ("train", "val", "test"):
        for cls in ("Arborio", "Jasmine"):
            _write_image(tmp_path / split / cls / f"{cls} (1).jpg")
        (tmp_path / split / "Arborio" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / ".cache").mkdir()
    dataset = discover(tmp_path)
    assert dataset.layout == "split"
    assert dataset.classes == ["Arborio", "Jasmine"]
    assert dataset.counts()["val"] == {"Arborio": 1, "Jasmine": 1}
    assert dataset.non_images == []


def test_examples_give_stable_labels_in_class_order(tmp_path):
    for cls in ("Karacadag", "Arborio"):
        for i in range(2):
            _write_image(tmp_path / "train" / cls / f"{cls} ({i}).jpg")
    paths, labels = discover(tmp_path).examples("train")
    assert labels == [0, 0, 1, 1]
    assert [p.parent.name for p in paths] == ["Arborio", "Arborio", "Karacadag", "Karacadag"]


def test_real_dataset_layout(real_data):
    dataset = discover(real_data)
    assert dataset.layout == "split"
    assert dataset.classes == ["Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag"]
    assert dataset.counts()["train"]["Basmati"] == 1000
    assert any(" (" in p.name for p in dataset.files["test"]["Ipsala"])


def test_missing_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "nope")
    shutil.rmtree(tmp_path)
