"""promote's checks around `verify_image`: repository, run, and a commit tag that moved."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from rice_mlops import tasks
from rice_mlops.run_policy import RunRequest
from rice_mlops.settings import PipelineSettings

RUN = "a" * 32
SHA = "b" * 40
DIGEST = "sha256:" + "c" * 64
HOST = "127.0.0.1:5000"


class FakeRegistry:
    def __init__(self, tag_digest: str):
        self.tag_digest = tag_digest

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def manifest(self, name, reference):
        return b"{}", "application/json", self.tag_digest


def _request() -> RunRequest:
    return RunRequest(data_dir=None, epochs=1, image_size=64, batch_size=32,
                      min_test_accuracy=0.9, max_regression=0.0, source_commit=SHA,
                      source_ref="", source_repository="", pusher="", compare_url="")


@pytest.fixture
def wired(monkeypatch):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    import rice_mlops.attestation as attestation

    state = {"tag": DIGEST, "run": RUN}
    monkeypatch.setattr(tasks, "_registry", lambda s: (HOST, FakeRegistry(state["tag"])))
    monkeypatch.setattr(tasks, "_signing_key", lambda s: Ed25519PrivateKey.generate())
    monkeypatch.setattr(attestation, "verify_image", lambda *a: {
        "mlflow_run_id": state["run"], "source_commit": SHA})
    return state


def _image(ref=f"{HOST}/rice-classifier@{DIGEST}", digest=DIGEST) -> dict:
    return {"digest_ref": ref, "digest": digest, "image": f"{HOST}/rice-classifier:{SHA}"}


def test_verified_image_of_this_run_passes(wired):
    report = tasks.verify_pushed(PipelineSettings(), _request(), RUN, _image())
    assert report["mlflow_run_id"] == RUN


def test_a_moved_commit_tag_refuses(wired):
    wired["tag"] = "sha256:" + "d" * 64
    with pytest.raises(AirflowFailException, match="someone moved the tag"):
        tasks.verify_pushed(PipelineSettings(), _request(), RUN, _image())


def test_another_runs_image_refuses(wired):
    wired["run"] = "e" * 32
    with pytest.raises(AirflowFailException, match="not " + RUN):
        tasks.verify_pushed(PipelineSettings(), _request(), RUN, _image())


@pytest.mark.parametrize("image", [
    _image(ref=f"evil.example:5000/rice-classifier@{DIGEST}"),
    _image(ref=f"{HOST}/other@{DIGEST}"),
    _image(digest="sha256:" + "f" * 64),
])
def test_an_xcom_naming_another_repository_or_digest_refuses(wired, image):
    with pytest.raises(AirflowFailException, match="is not an image of"):
        tasks.verify_pushed(PipelineSettings(), _request(), RUN, image)
