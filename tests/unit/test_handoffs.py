"""The typed hand-offs between the DAG's tasks: frozen, their derived names written once, and
a round trip through Airflow's own XCom serialisation with the deployments' allowlist."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from rice_mlops.core import handoffs
from rice_mlops.core.handoffs import (
    ALLOWED_DESERIALIZATION_CLASSES,
    Admission,
    Approval,
    BuildContext,
    Freshness,
    Gate,
    Promoted,
    Served,
)
from rice_mlops.core.run_policy import PolicyError
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.release.image import run_image_plan
from tests.helpers import handoffs as make
from tests.helpers.paths import REPO

RUN = "ab" * 16
SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"
DIGEST = "sha256:" + "c" * 64


def _samples() -> list:
    """One value of every hand-off type, with tuples, dicts and None in it."""
    return [
        Admission(proceed=False, superseded_by="c" * 40),
        make.dataset(counts={"train": {"Arborio": 2}, "test": {"Arborio": 1}}),
        Freshness(train=True, code_digest="sha256:x", reason="forced"),
        make.trained(RUN, artifact_sha256={"tflite/model.tflite": "0" * 64}),
        make.staged(),
        make.gate("4", refusals=("below the bar",), per_class_recall={"A": {"recall": 0.5}},
                  significant=None, champion_record={"version": "3", "classes": ["A"]}),
        BuildContext(run_id=RUN, context="/release/x/image", image="r/rice:1",
                     latest="r/rice:latest", repository="r/rice", local="rice:run-x",
                     registry=None),
        make.image("127.0.0.1:5000/rice@" + DIGEST, DIGEST, attachments={"sbom": "t"}),
        Approval(required=True, approved=False, by=None),
        Promoted(mlflow_run_id=RUN, model_version="4", test_accuracy=0.99,
                 dataset_fingerprint="sha256:d", classes=("A", "B"), tflite_sha256="0" * 64),
        Served(served=True, summary="serving v4 at 100 %", model_version="4",
               reference="127.0.0.1:5000/rice@" + DIGEST, seconds=12.5,
               verdicts=("shadow: agreement 100.0% on 60 requests",)),
    ]


def test_every_hand_off_type_has_a_sample_and_is_frozen():
    samples = _samples()
    assert {type(value) for value in samples} == set(handoffs.HANDOFFS)
    for value in samples:
        field = dataclasses.fields(value)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, None)


def test_a_tuple_field_read_back_from_json_is_a_tuple_again():
    value = make.trained(RUN, classes=["A", "B"])
    assert value.classes == ("A", "B")
    assert value.as_dict()["classes"] == ["A", "B"]  # JSON-ready for MLflow and renderers


def test_the_run_directories_are_derived_from_the_checked_run_id(tmp_path):
    settings = PipelineSettings(staging_root=tmp_path / "staging")
    trained = make.trained(RUN, tracking_uri="http://mlflow:5000", experiment_id="7")
    assert trained.run_dir(settings) == tmp_path / "staging" / RUN
    assert trained.staged_dir(settings) == tmp_path / "staging" / RUN / "model_artifact"
    assert trained.evidence_dir(settings) == tmp_path / "staging" / RUN / "evidence"
    assert trained.model_card(settings) == trained.evidence_dir(settings) / "MODEL_CARD.md"
    assert trained.run_url == f"http://mlflow:5000/#/experiments/7/runs/{RUN}"

def test_a_hand_off_with_a_bad_run_id_is_never_built():
    # An XCom is untrusted: serde rebuilds it through the constructor, which checks the run id
    # once, so no derived directory, tag or image name ever sees an unchecked one.
    for hostile in ("../../etc", "$(touch /x)", "A" * 32, 7, None):
        with pytest.raises(PolicyError, match="is not an MLflow run id"):
            make.trained(hostile)
        with pytest.raises(PolicyError, match="is not an MLflow run id"):
            BuildContext(run_id=hostile, context="c", image="i", latest="l", repository="r",
                         local="x", registry=None)


def test_the_image_plan_is_derived_in_one_place(tmp_path):
    settings = PipelineSettings(staging_root=tmp_path / "staging", image_name="rice-classifier")
    trained = make.trained(RUN)
    plan = run_image_plan(trained, settings, SHA, "127.0.0.1:5000")
    assert plan.context == settings.release_root / RUN / "image"
    assert plan.names.immutable == f"127.0.0.1:5000/rice-classifier:{SHA}"
    assert plan.names.latest == "127.0.0.1:5000/rice-classifier:latest"
    nightly = run_image_plan(trained, settings, None, None)  # no commit: the run id tags it
    assert nightly.names.immutable == f"rice-classifier:run-{RUN}"
    built = plan.handoff()
    assert (built.run_id, built.context, built.image, built.latest, built.repository) == (
        RUN, str(plan.context), plan.names.immutable, plan.names.latest, plan.names.repository)


def test_training_digests_are_read_only_when_complete():
    from rice_mlops.core.staged_artifacts import MODEL_BYTES, ReleaseInputError

    complete = {artifact: "0" * 64 for artifact in MODEL_BYTES}
    assert make.trained(RUN, artifact_sha256=complete).digests() == complete
    with pytest.raises(ReleaseInputError, match="recorded no artifact digests"):
        make.trained(RUN, artifact_sha256=None).digests()
    with pytest.raises(ReleaseInputError, match="not 64 lower-case hex"):
        make.trained(RUN, artifact_sha256={**complete, "tflite/model.tflite": "../x"}).digests()


def test_the_gate_hand_off_carries_the_gate_result_flat():
    from rice_mlops.compute.gate import decide

    result = decide(0.5, min_test_accuracy=0.9, max_regression=0.0, classes=["A", "B"],
                    labels=[0, 1, 0, 1], predictions=[0, 0, 0, 1])
    gate = Gate.from_result(result, passed=False, reason="custom", version="7")
    assert (gate.passed, gate.reason, gate.version) == (False, "custom", "7")
    assert gate.test_accuracy == result.test_accuracy == 0.75 and gate.measured is True
    assert gate.refusals == tuple(result.refusals) and gate.refusals
    assert gate.per_class_recall == result.per_class_recall
    assert gate.table == result.as_dict()["table"] and "| recall A |" in gate.table


def test_the_promoted_record_is_what_the_next_gate_reads_back():
    from rice_mlops.compute.champion import ChampionRecord

    promoted = next(value for value in _samples() if isinstance(value, Promoted))
    record = ChampionRecord.from_extra(promoted.as_dict())
    assert record is not None
    assert (record.version, record.run_id, record.classes) == ("4", RUN, ("A", "B"))


@pytest.fixture
def allowlist(monkeypatch):
    """Airflow's serde reading `[core] allowed_deserialization_classes` as `patterns`."""
    from airflow.sdk import serde

    def use(patterns: str) -> None:
        monkeypatch.setenv("AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES", patterns)
        for cached in (serde._get_patterns, serde._match_glob, serde._match_regexp):
            cached.cache_clear()

    yield use
    monkeypatch.undo()
    for cached in (serde._get_patterns, serde._match_glob, serde._match_regexp):
        cached.cache_clear()


def _through_xcom(value):
    """`value` the way a task pushes it and the next task pulls it: the task SDK's XCom
    serialiser, JSON on the way through the execution API, its deserialiser."""
    from airflow.sdk.execution_time.xcom import XCom

    stored = json.loads(json.dumps(XCom.serialize_value(value)))
    return stored, XCom.deserialize_value(SimpleNamespace(value=stored))


@pytest.mark.parametrize("value", _samples(), ids=lambda value: type(value).__name__)
def test_every_hand_off_survives_a_real_xcom_round_trip(allowlist, value):
    allowlist(ALLOWED_DESERIALIZATION_CLASSES)
    stored, back = _through_xcom(value)
    assert stored["__classname__"] == f"rice_mlops.core.handoffs.{type(value).__name__}"
    assert stored["__version__"] == 1
    assert type(back) is type(value) and back == value
    assert handoffs.unwrapped(stored) == value.as_dict()  # what REST clients read


def test_airflows_default_allowlist_refuses_the_hand_offs(allowlist):
    allowlist("airflow.*")
    with pytest.raises(ImportError, match="rice_mlops.core.handoffs.Trained was not found in"):
        _through_xcom(make.trained(RUN))


def test_no_other_class_of_ours_is_rebuilt_from_an_xcom(allowlist):
    """Rebuilding imports and calls the named class: a patched XCom naming any other class of
    the package (here two frozen dataclasses) is refused."""
    from rice_mlops.compute.champion import ChampionRecord
    from rice_mlops.publication.outcome import Outcome

    allowlist(ALLOWED_DESERIALIZATION_CLASSES)
    others = [Outcome("shipped", "note", "success", False),
              ChampionRecord(version="1", run_id=RUN, tflite_sha256="0" * 64,
                             test_accuracy=0.9, dataset_fingerprint="d", classes=("A",))]
    for value in others:
        with pytest.raises(ImportError, match="not found in allow list"):
            _through_xcom(value)


def test_a_newer_stored_layout_is_refused(allowlist):
    allowlist(ALLOWED_DESERIALIZATION_CLASSES)
    from airflow.sdk.execution_time.xcom import XCom

    stored, _ = _through_xcom(Admission(proceed=True))
    with pytest.raises(TypeError, match="newer than module version"):
        XCom.deserialize_value(SimpleNamespace(value={**stored, "__version__": 2}))


def test_every_place_airflow_runs_sets_the_same_allowlist():
    from tests.helpers.pipeline import airflow_env

    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES"] == \
        ALLOWED_DESERIALIZATION_CLASSES
    stack = (REPO / "scripts" / "airflow-stack").read_text()
    assert (f"export AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES="
            f"'{ALLOWED_DESERIALIZATION_CLASSES}'\n") in stack
    tests = airflow_env("http://mlflow", Path("/staging"))
    assert tests["AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES"] == \
        ALLOWED_DESERIALIZATION_CLASSES


def test_a_stage_refuses_a_plain_value_where_a_hand_off_belongs():
    """The REST API stores only plain values (it refuses serde's keys), so a dict where a
    hand-off belongs was written by someone else than its task: refused, not retried."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from rice_mlops.stages import release
    from rice_mlops.stages.common import proceed

    assert proceed(make.gate(passed=True), "passed") is True
    assert proceed(Admission(proceed=False), "proceed") is False
    assert proceed(Freshness(train=True, code_digest="d", reason="r"), "train") is True
    with pytest.raises(AirflowFailException,
                       match="proceed takes Admission or Freshness or Gate as decision, not a "
                             "dict"):
        proceed({"passed": True}, "passed")
    settings = PipelineSettings()
    with pytest.raises(AirflowFailException, match="takes Image or None as image, not a dict"):
        release.attest_image(settings, {}, make.trained(RUN), {"digest": DIGEST}, "run")
    with pytest.raises(AirflowFailException, match="takes Trained as trained, not a dict"):
        release.attest_image(settings, {}, {"run_id": RUN}, None, "run")
    with pytest.raises(AirflowSkipException, match="nothing to attest"):  # None is allowed
        release.attest_image(settings, {}, make.trained(RUN), None, "run")


def test_an_image_hand_off_names_a_real_digest_and_only_that_one():
    digest = "sha256:" + "a" * 64
    good = make.image(f"127.0.0.1:5000/rice@{digest}", digest)
    assert good.digest == digest
    for bad_digest in ("sha256:" + "A" * 64, "sha256:abc", "md5:" + "a" * 32, None, 1):
        with pytest.raises(PolicyError, match="is not an image digest"):
            make.image(f"127.0.0.1:5000/rice@{bad_digest}", bad_digest)
    other = "sha256:" + "b" * 64  # a patched XCom pointing the reference at other bytes
    with pytest.raises(PolicyError, match="does not name the image by"):
        make.image(f"127.0.0.1:5000/rice@{other}", digest)
