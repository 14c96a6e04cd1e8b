"""The serving image's wheels, vendored into its build context so the build needs no network.

The pinned, hashed requirements (`requirements/serving.txt`, and the build stage's installer
`requirements/installer.txt`) are downloaded once per requirements file and platform into a
cache in the release zone, checked against their hashes before every build, and linked into
each build context (`rice_mlops.release.image.prepare_context`). `rice-mlops image wheels` fills a
wheelhouse for workers that cannot reach the package index (`RICE_SERVING_WHEELHOUSE`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_REQUIREMENTS = REPO_ROOT / "requirements" / "serving.txt"
# Vendored beside the wheels and run from its own wheel in the build stage; never installed.
INSTALLER = "pip==26.3"
INSTALLER_REQUIREMENTS = REPO_ROOT / "requirements" / "installer.txt"  # INSTALLER, hashed


def _wheel_platforms(machine: str) -> list[str]:
    # pip's --platform does not widen to older manylinux tags by itself; list them all,
    # newest first, down to what Debian bookworm's glibc 2.36 runs.
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def vendor_wheels(target: Path, cache_root: Path, requirements: Path = DEFAULT_REQUIREMENTS,
                  machine: str | None = None, wheelhouse: Path | None = None) -> list[Path]:
    """Wheels for the image's platform (CPython 3.11, manylinux), the installer pip included.

    Downloaded once per requirements file and platform into `cache_root`, then linked. With a
    `wheelhouse` (from `rice-mlops image wheels`), pip reads only it: for workers offline.
    """
    machine = machine or platform.machine()
    key = hashlib.sha256(requirements.read_bytes() + f"{machine} {INSTALLER}".encode())
    cache = cache_root / f"wheels-{key.hexdigest()[:16]}"
    _drop_unverified(cache, requirements)
    if not (cache / "requirements.txt").is_file():
        cache_root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".wheels-partial-", dir=cache_root))
        try:
            download_wheels(partial, requirements, machine, wheelhouse)
            shutil.copy(requirements, partial / "requirements.txt")
            os.chmod(partial, 0o755)
            if cache.exists():
                shutil.rmtree(partial)
            else:
                os.rename(partial, cache)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    target.mkdir(parents=True, exist_ok=True)
    for wheel in cache.iterdir():
        try:  # a hard link: each run's build context would otherwise hold ~48 MB of copies
            os.link(wheel, target / wheel.name)
        except OSError:
            shutil.copy2(wheel, target / wheel.name)
    return sorted(target.glob("*.whl"))


def _drop_unverified(cache: Path, requirements: Path) -> None:
    """Before every build: a cached wheel whose sha256 the pinned requirements do not list
    (the staging directory is shared with the Docker host) sends the cache back to pip."""
    from rice_mlops.release.pins import unverified_wheels

    if not (cache / "requirements.txt").is_file():
        return
    problems = unverified_wheels(cache, requirements, INSTALLER_REQUIREMENTS)
    if problems:
        log.warning("serving wheel cache %s fails its hash check (%s); downloading again",
                    cache, "; ".join(problems[:5]))
        aside = cache.with_name(f".{cache.name}-unverified-{os.getpid()}")
        os.rename(cache, aside)  # at once, so no build links a wheel from it meanwhile
        shutil.rmtree(aside, ignore_errors=True)


def download_wheels(dest: Path, requirements: Path = DEFAULT_REQUIREMENTS,
                    machine: str | None = None, wheelhouse: Path | None = None) -> list[Path]:
    """`pip download` the serving requirements for the image platform into `dest`."""
    machine = machine or platform.machine()
    args = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
            "--no-deps", "--python-version", "3.11", "--implementation", "cp",
            "--dest", str(dest), "-r", str(requirements), "-r", str(INSTALLER_REQUIREMENTS)]
    for tag in _wheel_platforms(machine):
        args += ["--platform", tag]
    if wheelhouse is not None:
        if not wheelhouse.is_dir():
            raise RuntimeError(f"the serving wheelhouse {wheelhouse} does not exist: create it "
                               "with `rice-mlops image wheels --dest DIR` on a host that reaches "
                               "the package index, or unset RICE_SERVING_WHEELHOUSE")
        args += ["--no-index", "--find-links", str(wheelhouse)]
    dest.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(args, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        where = f" from the wheelhouse {wheelhouse}" if wheelhouse is not None else ""
        raise RuntimeError(f"could not download the serving wheels for {machine}{where}: "
                           f"{exc.stderr.strip()[-800:]}") from None
    return sorted(dest.glob("*.whl"))
