"""A full staging directory: `fetch` fails clearly (the directory, the space free and needed)
and leaves nothing of the attempt behind; the next attempt, with room, stages the run."""

from __future__ import annotations

import errno
from collections import namedtuple
from types import SimpleNamespace

import pytest

from rice_mlops.core import staged_artifacts as artifacts
from rice_mlops.core.staged_artifacts import StagingSpaceError, fetch, verify_manifest

RUN = "0123456789abcdef0123456789abcdef"
Usage = namedtuple("Usage", "total used free")


def _writes_model(run_id, model_uri, target):
    (target / "MLmodel").write_text("flavors: {}\n")
    (target / "model.tflite").write_bytes(b"\0" * 1000)


@pytest.fixture
def disk(monkeypatch):
    """A staging volume with `free` bytes and runs that need `needed` bytes."""
    state = SimpleNamespace(free=10**9, needed=5 * 2**20, downloads=0)
    monkeypatch.setattr(artifacts, "needed_bytes", lambda run_id, uri: state.needed)
    monkeypatch.setattr(artifacts.shutil, "disk_usage",
                        lambda path: Usage(10**10, 10**10 - state.free, state.free))

    def download(run_id, model_uri, target):
        state.downloads += 1
        _writes_model(run_id, model_uri, target)

    monkeypatch.setattr(artifacts, "_download", download)
    return state


def test_too_little_room_fails_before_downloading_naming_directory_and_sizes(disk, tmp_path):
    disk.free = 1 * 2**20
    with pytest.raises(StagingSpaceError) as raised:
        fetch(RUN, "models:/m-1", tmp_path)
    message = str(raised.value)
    assert str(tmp_path / RUN) in message
    assert "5,242,880 bytes (5.0 MiB)" in message and "1,048,576 bytes (1.0 MiB) free" in message
    assert raised.value.errno == errno.ENOSPC and raised.value.needed == 5 * 2**20
    assert disk.downloads == 0
    assert list(tmp_path.iterdir()) == []  # not even the run's directory


def test_the_next_attempt_with_room_stages_the_run(disk, tmp_path):
    disk.free = 1024
    with pytest.raises(StagingSpaceError):
        fetch(RUN, "models:/m-1", tmp_path)
    disk.free = 10**9
    staged = fetch(RUN, "models:/m-1", tmp_path)
    assert set(verify_manifest(staged)) == {"MLmodel", "model.tflite"}
    assert [p.name for p in (tmp_path / RUN).iterdir()] == ["model_artifact"]


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    # MLflow reports a failed parallel download in its own exception, with the cause's text
    RuntimeError("Failed to download artifacts: [Errno 28] No space left on device: 'x'"),
])
def test_a_disk_that_fills_during_the_download_leaves_nothing_behind(disk, tmp_path,
                                                                      monkeypatch, failure):
    def fills(run_id, model_uri, target):
        (target / "MLmodel").write_text("half")
        raise failure

    monkeypatch.setattr(artifacts, "_download", fills)
    with pytest.raises(StagingSpaceError) as raised:
        fetch(RUN, "models:/m-1", tmp_path)
    assert str(tmp_path / RUN) in str(raised.value) and "5.0 MiB" in str(raised.value)
    assert raised.value.__cause__ is failure
    assert list(tmp_path.iterdir()) == []


def test_other_failures_stay_what_they_are_and_keep_the_runs_other_files(disk, tmp_path,
                                                                         monkeypatch):
    context = tmp_path / RUN / "context"
    context.mkdir(parents=True)  # an earlier attempt's build context, say

    def refused(run_id, model_uri, target):
        raise ConnectionError("MLflow is restarting")

    monkeypatch.setattr(artifacts, "_download", refused)
    with pytest.raises(ConnectionError):
        fetch(RUN, "models:/m-1", tmp_path)
    assert [p.name for p in (tmp_path / RUN).iterdir()] == ["context"]


def test_needed_bytes_walks_the_model_tree_and_the_run_files(monkeypatch):
    File = namedtuple("File", "path is_dir file_size")
    trees = {
        "model": {None: [File("MLmodel", False, 300), File("data", True, None)],
                  "data": [File("data/model.keras", False, 50_000)]},
        "run": {"tflite": [File("tflite/model.tflite", False, 20_000)],
                "model_meta": [File("model_meta/labels.json", False, 100),
                               File("model_meta/other.json", False, 10**9)],
                "plots": [File("plots/confusion_matrix.png", False, 7_000),
                          File("plots/training_curves.png", False, 10**9)]},
    }

    class Repository:
        def __init__(self, uri):
            self.tree = trees["model" if uri.startswith("models:/") else "run"]

        def list_artifacts(self, path=None):
            return self.tree.get(path, [])

    import mlflow
    from mlflow.store.artifact import artifact_repository_registry

    monkeypatch.setattr(artifact_repository_registry, "get_artifact_repository", Repository)
    monkeypatch.setattr(mlflow, "MlflowClient", lambda: SimpleNamespace(
        get_run=lambda run_id: SimpleNamespace(info=SimpleNamespace(artifact_uri="runs:/x"))))
    files = 5  # MLmodel, model.keras and the three run files; nothing else of the run
    assert artifacts.needed_bytes(RUN, "models:/m-1") == (
        300 + 50_000 + 20_000 + 100 + 7_000 + files * 4096 + 256 * 1024)
