"""A digest of what decides a trained model besides its data: the training code, the installed
packages and the training parameters. Equal digest and dataset fingerprint to the champion's
means retraining would reproduce the champion, so the run ends as unchanged."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # rice_mlops/
TRAINING_MODULES = ("compute/training_config.py", "compute/training_run.py", "compute/recipe.py",
                    "compute/model.py", "compute/metrics.py", "compute/export.py",
                    "core/dataset_layout.py", "compute/data/pipeline.py",
                    "serving/inference.py")


def installed_packages() -> list[str]:
    """`name==version` of every installed distribution: what the lock installed here."""
    names = {f"{(d.metadata['Name'] or '').lower()}=={d.version}"
             for d in metadata.distributions()}
    return sorted(n for n in names if not n.startswith("rice-mlops=="))


def training_code_digest(params: Mapping, packages: list[str] | None = None) -> str:
    digest = hashlib.sha256()
    for name in TRAINING_MODULES:
        digest.update(name.encode() + b"\0" + (_PACKAGE / name).read_bytes() + b"\0")
    for package in installed_packages() if packages is None else packages:
        digest.update(package.encode() + b"\n")
    digest.update(json.dumps(dict(params), sort_keys=True).encode())
    return f"sha256:{digest.hexdigest()}"
