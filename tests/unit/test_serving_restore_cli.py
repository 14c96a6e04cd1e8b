"""`rice-mlops serving restore`, what the release worker runs before its first task: with
nothing recorded it needs no engine; with a deployment recorded and no engine it says so and
exits 1 (the worker logs it and starts anyway); a state file it cannot trust starts nothing."""

from __future__ import annotations

import json

import pytest

from rice_mlops.cli import main
from rice_mlops.rollout.state import Deployment, ServingState, save

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
