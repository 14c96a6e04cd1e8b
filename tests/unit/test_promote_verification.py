"""promote's checks around `verify_image`: repository, run, and a commit tag that moved."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.core.run_policy import PolicyError, RunRequest
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.core.vocabulary import DAG_ID
from rice_mlops.stages import release
from tests.helpers import handoffs

RUN = "a" * 32
SHA = "b" * 40
DIGEST = "sha256:" + "c" * 64
HOST = "127.0.0.1:5000"
TRAINED = handoffs.trained(RUN)


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

    import rice_mlops.release.attestation as attestation

    state = {"tag": DIGEST, "run": RUN, "version": "7", "calls": []}
    monkeypatch.setattr(release, "registry_client", lambda s: (HOST, FakeRegistry(state["tag"])))
    monkeypatch.setattr(release, "pipeline_signing_key", lambda s: Ed25519PrivateKey.generate())

    def verify_image(*args, expected_commit=None, min_version=None, rollback_to=None):
        state["calls"].append({"expected_commit": expected_commit, "min_version": min_version,
                               "rollback_to": rollback_to})
        if expected_commit is not None and expected_commit != SHA:
            raise attestation.VerificationError("not the expected commit")
        order = attestation.release_order(state["version"], min_version, rollback_to)
        return {"mlflow_run_id": state["run"], "source_commit": SHA,
                "model_version": state["version"], "release_order": order}

    monkeypatch.setattr(attestation, "verify_image", verify_image)
    return state


def _image(ref=f"{HOST}/rice-classifier@{DIGEST}", digest=DIGEST):
    return handoffs.image(ref, digest, image=f"{HOST}/rice-classifier:{SHA}")


def test_verified_image_of_this_run_passes(wired):
    report = release.verify_pushed(PipelineSettings(), _request(), TRAINED, _image())
    assert report["mlflow_run_id"] == RUN


def test_a_moved_commit_tag_refuses(wired):
    wired["tag"] = "sha256:" + "d" * 64
    with pytest.raises(AirflowFailException, match="someone moved the tag"):
        release.verify_pushed(PipelineSettings(), _request(), TRAINED, _image())


def test_another_runs_image_refuses(wired):
    wired["run"] = "e" * 32
    with pytest.raises(AirflowFailException, match="not " + RUN):
        release.verify_pushed(PipelineSettings(), _request(), TRAINED, _image())


@pytest.mark.parametrize("image", [
    _image(ref=f"evil.example:5000/rice-classifier@{DIGEST}"),
    _image(ref=f"{HOST}/other@{DIGEST}"),
])
def test_an_xcom_naming_another_repository_refuses(wired, image):
    with pytest.raises(AirflowFailException, match="is not an image of"):
        release.verify_pushed(PipelineSettings(), _request(), TRAINED, image)


def test_an_xcom_whose_reference_and_digest_differ_is_never_built():
    # serde rebuilds a stored XCom through the constructor, which refuses the pair.
    with pytest.raises(PolicyError, match="does not name the image by"):
        _image(digest="sha256:" + "f" * 64)


def test_the_run_s_commit_and_the_recorded_champion_go_to_the_verifier(wired):
    release.verify_pushed(PipelineSettings(), _request(), TRAINED, _image(), version="7",
                        champion_version="6")
    assert wired["calls"] == [{"expected_commit": SHA, "min_version": 6, "rollback_to": None}]


def test_an_image_signed_as_another_version_refuses(wired):
    with pytest.raises(AirflowFailException, match="signed as model v7, not this run's v8"):
        release.verify_pushed(PipelineSettings(), _request(), TRAINED, _image(), version="8")


def test_an_image_older_than_the_recorded_champion_needs_a_named_rollback(wired):
    with pytest.raises(AirflowFailException, match="v7, older than v9"):
        release.verify_pushed(PipelineSettings(), _request(), TRAINED, _image(), version="7",
                            champion_version="9")
    settings = PipelineSettings.from_env({"RICE_ROLLBACK_TO_VERSION": "7"})
    report = release.verify_pushed(settings, _request(), TRAINED, _image(), version="7",
                                 champion_version="9")
    assert report["release_order"] == "rollback to v7, asked for by name"
    with pytest.raises(AirflowFailException, match="rollback to v6 was asked for"):
        release.verify_pushed(PipelineSettings.from_env({"RICE_ROLLBACK_TO_VERSION": "6"}),
                            _request(), TRAINED, _image(), version="7", champion_version="9")


@pytest.mark.parametrize("value", ["0", "-1", "v7", "7.0", "07"])
def test_a_rollback_setting_that_names_no_version_is_refused(value):
    from rice_mlops.core.settings import SettingsError

    with pytest.raises(SettingsError, match="RICE_ROLLBACK_TO_VERSION"):
        PipelineSettings.from_env({"RICE_ROLLBACK_TO_VERSION": value})


def test_promote_takes_the_minimum_from_its_own_asset_events_not_xcom(monkeypatch):
    from types import SimpleNamespace

    seen = {}

    def verify_pushed(settings, request, run_id, image, version=None, champion_version=None):
        seen.update(version=version, champion=champion_version)
        raise RuntimeError("stop here")

    monkeypatch.setattr(release, "verify_pushed", verify_pushed)
    monkeypatch.setattr(release, "checked_request", lambda settings, params: _request())
    extra = {"model_version": "9", "mlflow_run_id": "f" * 32, "tflite_sha256": "0" * 64,
             "test_accuracy": 0.99, "dataset_fingerprint": "sha256:x", "classes": ["a"]}
    events = [SimpleNamespace(source_dag_id=DAG_ID, source_task_id="promote",
                              extra=extra),
              SimpleNamespace(source_dag_id="other_dag", source_task_id="promote",
                              extra={**extra, "model_version": "2"})]
    with pytest.raises(RuntimeError, match="stop here"):
        release.promote(PipelineSettings(), {"source_commit": SHA}, handoffs.dataset(), TRAINED,
                        handoffs.staged(), handoffs.gate("10", champion_version="1"), _image(),
                        "r1", events)
    assert seen == {"version": "10", "champion": "9"}
