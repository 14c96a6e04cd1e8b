"""Fetch a run's artifacts from the MLflow artifact store into a verified staging directory.

Layout of `<staging_root>/<run_id>/model_artifact/` (what the pull request commits and the
image build copies): the MLflow model files at the top (MLmodel, data/model.keras,
requirements.txt, python_env.yaml, ...), `model.tflite`, `labels.json`, `metrics.json`,
`confusion_matrix.png` and `MANIFEST.sha256` (`sha256sum -c` format) over all of them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from rice_mlops.core.fingerprint import file_sha256
from rice_mlops.core.vocabulary import FINGERPRINT_TAG, SOURCE_TAGS, TFLITE_ARTIFACT

MODEL_BYTES = {"tflite/model.tflite": "model.tflite", "model_meta/labels.json": "labels.json"}
MANIFEST = "MANIFEST.sha256"
ARTIFACT_DIR = "model_artifact"
# Run artifact -> file name in the staged directory.
RUN_FILES = {
    TFLITE_ARTIFACT: "model.tflite",
    "model_meta/labels.json": "labels.json",
    "plots/confusion_matrix.png": "confusion_matrix.png",
}


# Room for what `fetch` writes besides the downloaded files (metrics.json, the manifest) and
# for each file's last partly used block.
_OVERHEAD_BYTES = 256 * 1024
_BLOCK = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ReleaseInputError(RuntimeError):
    """The model bytes, their digests or the smoke set are not what training recorded."""


class ManifestError(RuntimeError):
    """A staged directory does not match its manifest."""


class StagingSpaceError(OSError):
    """The staging directory has no room for a run's artifacts; nothing was left behind."""

    def __init__(self, directory: Path, needed: int | None, free: int):
        need = (f"needs about {needed:,} bytes ({needed / 2**20:.1f} MiB)" if needed
                else "needs more than that")
        super().__init__(
            errno.ENOSPC,
            f"staging directory {directory} is full: {free:,} bytes ({free / 2**20:.1f} MiB) "
            f"free, staging this run {need}; free space there (prune_old_builds and "
            f"RICE_KEEP_BUILDS keep fewer runs) or point RICE_STAGING_DIR at a larger volume, "
            "then re-run fetch_artifacts")
        self.directory, self.needed, self.free = directory, needed, free


def write_manifest(directory: Path) -> Path:
    lines = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        lines.append(f"{file_sha256(path)}  {path.relative_to(directory).as_posix()}\n")
    manifest = directory / MANIFEST
    manifest.write_text("".join(lines))
    return manifest


def read_manifest(directory: Path) -> dict[str, str]:
    """{relative path: sha256} as the manifest lists them, without checking the files."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise ManifestError(f"{manifest} is missing; re-run fetch_artifacts")
    entries = {}
    for line in manifest.read_text().splitlines():
        digest, _, relative = line.partition("  ")
        entries[relative] = digest
    return entries


def verify_manifest(directory: Path) -> dict[str, str]:
    """Check every file against the manifest and that no file is missing or extra.

    Returns {relative path: sha256}. Raises ManifestError naming what differs.
    """
    expected = read_manifest(directory)
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*")
               if p.is_file() and p.name != MANIFEST}
    problems = [f"missing {r}" for r in sorted(set(expected) - present)]
    problems += [f"unexpected {r}" for r in sorted(present - set(expected))]
    problems += [f"checksum mismatch {r}" for r in sorted(set(expected) & present)
                 if file_sha256(directory / r) != expected[r]]
    if problems:
        raise ManifestError(f"{directory} does not match {MANIFEST}: " + "; ".join(problems))
    return expected


def _metrics_document(run_id: str, model_uri: str, evaluation: dict, run_data) -> dict:
    return {
        "run_id": run_id,
        "model_uri": model_uri,
        "dataset_fingerprint": run_data.tags.get(FINGERPRINT_TAG),
        "source_commit": run_data.tags.get(SOURCE_TAGS["commit"]),
        "test_accuracy": evaluation["accuracy"],
        "test_macro_f1": evaluation["macro_f1"],
        "val_accuracy": run_data.metrics.get("val_accuracy"),
        "per_class": evaluation["per_class"],
        "classes": evaluation["classes"],
        "confusion_matrix": evaluation["confusion_matrix"],
    }


def _download(run_id: str, model_uri: str, target: Path) -> None:
    import mlflow

    mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target))
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        for artifact, name in RUN_FILES.items():
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact, dst_path=scratch)
            shutil.move(local, target / name)
        evaluation = json.loads(Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="evaluation/metrics.json", dst_path=scratch)).read_text())
    run = mlflow.MlflowClient().get_run(run_id)
    document = _metrics_document(run_id, model_uri, evaluation, run.data)
    (target / "metrics.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def _tree_bytes(repository, path: str | None = None) -> tuple[int, int]:
    """(bytes, files) under `path` of an artifact repository."""
    size = files = 0
    for info in repository.list_artifacts(path):
        if info.is_dir:
            more, count = _tree_bytes(repository, info.path)
            size, files = size + more, files + count
        else:
            size, files = size + (info.file_size or 0), files + 1
    return size, files


def needed_bytes(run_id: str, model_uri: str) -> int:
    """What staging the run takes on disk: the model's files and the run files `fetch` copies,
    each rounded up to a block, plus what `fetch` writes itself."""
    import mlflow
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    size, files = _tree_bytes(get_artifact_repository(model_uri))
    run = get_artifact_repository(mlflow.MlflowClient().get_run(run_id).info.artifact_uri)
    for artifact in RUN_FILES:
        parent = os.path.dirname(artifact) or None
        size += sum(info.file_size or 0 for info in run.list_artifacts(parent)
                    if info.path == artifact)
        files += 1
    return size + files * _BLOCK + _OVERHEAD_BYTES


def _no_space(exc: BaseException) -> bool:
    """Whether a download failed because the disk is full (MLflow may wrap the OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _remove_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: an earlier stage or context lives there
        directory.rmdir()


def fetch(run_id: str, model_uri: str, staging_root: Path | str) -> Path:
    """Stage the run's artifacts; returns the verified `model_artifact` directory.

    Idempotent: an already staged directory that verifies is returned as it is. Downloads go to
    a temporary sibling that is renamed into place only once complete, so a partial download
    never looks done. Without room for the run's files it raises StagingSpaceError (naming the
    directory, the space free and the space needed) before downloading, or as soon as the disk
    fills; either way nothing of the attempt stays behind.
    """
    run_dir = Path(staging_root) / run_id
    final = run_dir / ARTIFACT_DIR
    if final.is_dir():
        try:
            verify_manifest(final)
            return final
        except ManifestError:
            shutil.rmtree(final)
    run_dir.mkdir(parents=True, exist_ok=True)
    needed = None
    try:
        needed = needed_bytes(run_id, model_uri)
        free = shutil.disk_usage(run_dir).free
        if free < needed:
            raise StagingSpaceError(run_dir, needed, free)
        partial = Path(tempfile.mkdtemp(prefix=f".{ARTIFACT_DIR}.partial-", dir=run_dir))
        try:
            _download(run_id, model_uri, partial)
            write_manifest(partial)
            verify_manifest(partial)
            os.chmod(partial, 0o755)  # mkdtemp makes 0700; the build reads it as another user
            os.rename(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    except StagingSpaceError:
        _remove_if_empty(run_dir)
        raise
    except BaseException as exc:
        _remove_if_empty(run_dir)
        if _no_space(exc):
            raise StagingSpaceError(run_dir, needed, shutil.disk_usage(run_dir.parent).free) \
                from exc
        raise
    return final


def recorded_digests(trained: Mapping) -> dict[str, str]:
    """{run artifact: sha256} of the model bytes, as the train task recorded them."""
    recorded = trained.get("artifact_sha256")
    if not isinstance(recorded, Mapping):
        raise ReleaseInputError("the train task recorded no artifact digests (artifact_sha256): "
                                "clear `train` so this run records them; nothing is built "
                                "from unrecorded bytes")
    digests = {}
    for artifact in MODEL_BYTES:
        value = recorded.get(artifact)
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            raise ReleaseInputError(f"the recorded sha256 of {artifact} is {value!r}, not 64 "
                                    "lower-case hex digits")
        digests[artifact] = value
    return digests


def manifest_digests(text: str) -> dict[str, str]:
    """{artifact: sha256} from `sha256sum` lines (a training run's logged manifest)."""
    entries = {}
    for line in text.splitlines():
        digest, _, artifact = line.partition("  ")
        if digest and artifact:
            entries[artifact] = digest
    return entries
