"""The checksum manifest of a staged artifact directory."""

from __future__ import annotations

import subprocess

import pytest

from rice_mlops.core.staged_artifacts import (
    MANIFEST,
    ManifestError,
    verify_manifest,
    write_manifest,
)


def _staged(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.keras").write_bytes(b"weights")
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "labels.json").write_text('{"classes": ["A"]}')
    write_manifest(tmp_path)
    return tmp_path


def test_manifest_lists_every_file_and_verifies(tmp_path):
    staged = _staged(tmp_path)
    files = verify_manifest(staged)
    assert set(files) == {"MLmodel", "data/model.keras", "labels.json"}


def test_manifest_is_sha256sum_compatible(tmp_path):
    staged = _staged(tmp_path)
    result = subprocess.run(["sha256sum", "-c", MANIFEST], cwd=staged, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "labels.json").write_text("tampered"), "checksum mismatch labels.json"),
        (lambda d: (d / "MLmodel").unlink(), "missing MLmodel"),
        (lambda d: (d / "extra.bin").write_bytes(b"x"), "unexpected extra.bin"),
        (lambda d: (d / MANIFEST).unlink(), "MANIFEST.sha256 is missing"),
    ],
)
def test_any_difference_is_reported(tmp_path, damage, message):
    staged = _staged(tmp_path)
    damage(staged)
    with pytest.raises(ManifestError, match=message):
        verify_manifest(staged)
