"""The pure functions the DAG's tasks call: image names and argv, pushed digests, the champion
record, the pull request's texts, when `champion` may move, which MLflow runs are reusable."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from rice_mlops.compute.champion import ChampionRecord, latest_record
from rice_mlops.compute.run_seal import reusable_result
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.publication.pull_request import pull_request_texts
from rice_mlops.release.image import PushOutputError, parse_pushed_digest, plan_for

RUN = "0123456789abcdef" * 2
DIGEST = "sha256:" + "ab" * 32


def test_image_plan_is_derived_from_checked_values(tmp_path):
    plan = plan_for(tmp_path, "rice-classifier", RUN, "9fceb02", "127.0.0.1:5000")
    assert plan.context == tmp_path / RUN / "image"
    assert plan.names.immutable == "127.0.0.1:5000/rice-classifier:9fceb02"
    assert plan.names.latest == "127.0.0.1:5000/rice-classifier:latest"
    assert plan.local == f"rice-classifier-build:{RUN}"
    nightly = plan_for(tmp_path, "rice-classifier", RUN, "", None)
    assert nightly.names.immutable == f"rice-classifier:run-{RUN}"
    assert plan.push_environment("rice_registry") == {
        "REGISTRY": "127.0.0.1:5000", "REPOSITORY": "127.0.0.1:5000/rice-classifier",
        "LOCAL": plan.local, "IMAGE": plan.names.immutable, "LATEST": plan.names.latest,
        "CONN_ID": "rice_registry"}


def test_build_argv_is_a_list_with_the_contexts_own_metadata(tmp_path):
    plan = plan_for(tmp_path, "rice-classifier", RUN, "9fceb02", None)
    (plan.context / "model").mkdir(parents=True)
    (plan.context / "model" / "metadata.json").write_text(json.dumps({
        "run_id": RUN, "model_version": "3", "source_commit": "9fceb02; rm -rf /",
        "model_name": "rice-classifier"}))
    argv = plan.build_argv("rice-base/python:3.11", "rice-base/build:bookworm")
    assert argv[:4] == ["build", "--network", "none", "--pull=false"]
    assert argv[-1] == str(plan.context)
    # Hostile text stays one argument: there is no shell to interpret it.
    assert "SOURCE_COMMIT=9fceb02; rm -rf /" in argv
    assert "BASE_IMAGE=rice-base/python:3.11" in argv
    assert "BUILD_IMAGE=rice-base/build:bookworm" in argv
    assert "RUNTIME_PURGED=apt debconf libapt-pkg6.0 perl-base" in argv
    assert not any(a.startswith("BUILD_IMAGE=") for a in plan.build_argv("b:1", ""))
    assert argv.count("-t") == 3 and plan.local in argv


def test_pushed_digest_is_parsed_from_the_last_line_only_for_our_repository():
    repository = "127.0.0.1:5000/rice-classifier"
    out = f"pushing\n{repository}@{DIGEST}\n"
    assert parse_pushed_digest(out, repository) == {"digest_ref": f"{repository}@{DIGEST}",
                                                    "digest": DIGEST}
    for bad in (None, "", f"{repository}@sha256:short", f"evil/repo@{DIGEST}",
                f"{repository}@{DIGEST}\nmore"):
        with pytest.raises(PushOutputError):
            parse_pushed_digest(bad, repository)


def _extra(**overrides) -> dict:
    return {"model_version": "4", "mlflow_run_id": RUN, "tflite_sha256": "cd" * 32,
            "test_accuracy": 0.99, "dataset_fingerprint": "sha256:x",
            "classes": ["Arborio", "Basmati"], **overrides}


def test_champion_record_needs_every_field_well_formed():
    assert ChampionRecord.from_extra(_extra()).version == "4"
    for broken in ({"tflite_sha256": "zz" * 32}, {"mlflow_run_id": "../x"},
                   {"model_version": "4; drop"}, {"test_accuracy": "high"}):
        assert ChampionRecord.from_extra(_extra(**broken)) is None
    assert ChampionRecord.from_extra({"model_version": "4"}) is None  # a pre-record event


def test_latest_record_comes_from_our_promote_task_only():
    def event(extra, dag="rice_classifier_cicd", task="promote"):
        return SimpleNamespace(extra=extra, source_dag_id=dag, source_task_id=task)

    events = [event(_extra(model_version="1")), event(_extra(model_version="2")),
              event(_extra(model_version="9"), dag="other"),
              event(_extra(model_version="8"), task="manual"), event({"model_version": "7"})]
    assert latest_record(events, "rice_classifier_cicd").version == "2"
    assert latest_record([], "rice_classifier_cicd") is None


def test_pull_request_texts_name_the_push_and_neutralise_its_text():
    texts = pull_request_texts(
        version="5", run_id=RUN, dag_run_id="github__acme.rice__" + "a" * 40,
        metrics={"test_accuracy": 0.99, "per_class": {}}, test_accuracy=0.99,
        champion={"version": "4", "test_accuracy": 0.98}, run_url="http://mlflow/#/run",
        fingerprint="sha256:x", source_commit="a" * 40, pusher="mallory`<img src=x>`\n# hi",
        compare_url="https://github.com/acme/rice/compare/a...b", image="r@" + DIGEST,
        figure_url="https://github.com/x.png", gate_reason="ok")
    assert texts["title"] == "Rice classifier v5: test accuracy 0.9900"
    assert texts["message"].startswith(f"Update rice classifier v5 from MLflow run {RUN}")
    assert "github__acme.rice__" in texts["message"]
    assert "`mallory'<img src=x>' # hi`" in texts["body"]  # one inline code span, one line
    assert "([changes](https://github.com/acme/rice/compare/a...b))" in texts["body"]
    assert "champion v4" in texts["body"]


@pytest.mark.parametrize(("setting", "registry", "allowed"), [
    ("auto", True, False), ("auto", False, True), ("true", True, True), ("false", False, False)])
def test_when_champion_may_move_without_an_image(setting, registry, allowed):
    pytest.importorskip("airflow")
    from rice_mlops.stages.release import may_promote_without_image

    settings = PipelineSettings(promote_without_image=setting)
    assert may_promote_without_image(settings, registry) is allowed


def _run(run_id=RUN):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id))


def test_a_run_found_in_mlflow_is_reused_only_when_it_is_consistent():
    good = {"run_id": RUN, "model_uri": "models:/m-" + "f" * 32,
            "metrics": {"test_accuracy": 0.9, "val_accuracy": 0.9, "test_macro_f1": 0.9}}
    assert reusable_result(_run(), good) is None
    assert "names run" in reusable_result(_run(), {**good, "run_id": "e" * 32})
    assert "model URI" in reusable_result(_run(), {**good, "model_uri": "file:///etc"})
    assert "test_accuracy" in reusable_result(
        _run(), {**good, "metrics": {**good["metrics"], "test_accuracy": 7}})
    assert "32 hex" in reusable_result(_run("../../x"), {**good, "run_id": "../../x"})
