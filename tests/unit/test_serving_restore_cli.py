"""`rice-mlops serving restore`, what the release worker runs before its first task: with
nothing recorded it needs no engine; with a deployment recorded and no engine it says so and
exits 1 (the worker logs it and starts anyway); a state file it cannot trust starts nothing."""

from __future__ import annotations

import json

import pytest

from rice_mlops.operations.cli import main
from rice_mlops.release.rollout.state import Deployment, ServingState, save

DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def release(tmp_path, monkeypatch):
    monkeypatch.setenv("RICE_RELEASE_DIR", str(tmp_path / "release"))
    monkeypatch.setenv("RICE_DOCKER_SOCKET", str(tmp_path / "no-engine.sock"))
    return tmp_path / "release" / "serving"


def test_nothing_recorded_is_nothing_to_restore_without_an_engine(release, capsys):
    assert main(["serving", "restore"]) == 0
    assert "nothing to restore" in capsys.readouterr().out


def test_a_recorded_deployment_without_an_engine_is_a_clear_error(release, capsys):
    release.mkdir(parents=True)
    stable = Deployment("blue", f"127.0.0.1:5000/rice-classifier@{DIGEST}", "7")
    save(release / "state.json", ServingState(stable=stable))
    assert main(["serving", "restore"]) == 1
    err = capsys.readouterr().err
    assert "nothing restored" in err and "does not answer" in err and "no-engine.sock" in err


def test_a_state_file_it_cannot_trust_starts_nothing(release, capsys):
    release.mkdir(parents=True)
    (release / "state.json").write_text(json.dumps({"stable": {"slot": "blue",
                                                               "reference": "evil:latest",
                                                               "model_version": "7"}}))
    assert main(["serving", "restore"]) == 1
    assert "cannot be trusted" in capsys.readouterr().err


def test_a_recorded_digest_that_does_not_verify_starts_nothing(release, monkeypatch, tmp_path,
                                                              capsys):
    """Issue 35: state.json names a digest; before anything starts, it must verify against the
    deployment's key in the deployment's registry. One from another registry, or one the
    registry cannot show verified, is refused, and the engine starts no container."""
    from rice_mlops.release.rollout import engine as engine_module
    from rice_mlops.release.signing import generate_keypair
    from tests.helpers.ports import free_port

    started = []

    class Engine:  # an engine that answers, and records what it would start
        def __init__(self, *args):
            pass

        def start_server(self, *args, **kwargs):
            started.append(args)

        def close(self):
            pass

    monkeypatch.setattr(engine_module, "Engine", Engine)
    private, _ = generate_keypair(tmp_path / "keys")
    monkeypatch.setenv("RICE_SIGNING_KEY_FILE", str(private))
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_RICE_REGISTRY", json.dumps({
        "conn_type": "generic", "host": "127.0.0.1", "port": port, "login": "u",
        "password": "p"}))
    release.mkdir(parents=True)
    for reference, expected in ((f"127.0.0.1:{port}/rice-classifier@{DIGEST}", "does not verify"),
                                (f"elsewhere.example:5000/rice-classifier@{DIGEST}",
                                 f"is not an image of 127.0.0.1:{port}/rice-classifier")):
        save(release / "state.json", ServingState(stable=Deployment("blue", reference, "7")))
        assert main(["serving", "restore"]) == 1
        err = capsys.readouterr().err
        assert "nothing restored" in err and expected in err, err
    assert started == []
