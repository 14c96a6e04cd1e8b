"""The dataset fingerprint is stable under relocation and changes with any content or path."""

from __future__ import annotations

import shutil

from rice_mlops.compute.data import discover
from rice_mlops.compute.data.synth import generate
from rice_mlops.core.fingerprint import fingerprint


def test_fingerprint_is_stable_and_location_independent(tmp_path):
    generate(tmp_path / "a", per_class=5, seed=3)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    first = fingerprint(discover(tmp_path / "a"))
    assert first == fingerprint(discover(tmp_path / "a"))
    assert first == fingerprint(discover(tmp_path / "b"))
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64


def test_fingerprint_changes_with_content_name_and_membership(tmp_path):
    generate(tmp_path, per_class=5, seed=3)
    original = fingerprint(discover(tmp_path))
    image = tmp_path / "train" / "Arborio" / "Arborio (1).jpg"

    data = bytearray(image.read_bytes())
    data[-10] ^= 0xFF
    image.write_bytes(bytes(data))
    changed_content = fingerprint(discover(tmp_path))
    assert changed_content != original

    renamed = image.with_name("Arborio (99).jpg")
    image.rename(renamed)
    changed_name = fingerprint(discover(tmp_path))
    assert changed_name not in (original, changed_content)

    renamed.unlink()
    assert fingerprint(discover(tmp_path)) not in (original, changed_content, changed_name)


def test_hidden_files_do_not_change_the_fingerprint(tmp_path):
    generate(tmp_path, per_class=3, seed=1)
    before = fingerprint(discover(tmp_path))
    (tmp_path / "train" / "Ipsala" / ".thumbs").write_text("x")
    assert fingerprint(discover(tmp_path)) == before
