"""Operator extra links (issue 38): each link is built from its task's own result, checked
again, and empty (not shown) when the task made nothing or its result is not what it should be."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("airflow")

from rice_mlops.core.handoffs import Image, Served, Trained  # noqa: E402
from rice_mlops.core.settings import PipelineSettings  # noqa: E402
from rice_mlops.stages import links  # noqa: E402

DIGEST = "sha256:" + "c" * 64
TRAINED = Trained(run_id="a" * 32, model_uri="models:/m-1", model_id="m-1", experiment_id="4",
                  tracking_uri="http://mlflow:5000", image_size=64, classes=("A", "B"),
                  metrics={}, dataset_fingerprint="sha256:" + "d" * 64, epochs_run=1)


def _ti(task_id: str, results: dict):
    return SimpleNamespace(task_id=task_id,
                           xcom_pull=lambda task_ids=None, **kw: results.get(task_ids))


def _link(link, task_id: str, results: dict, monkeypatch, **env) -> str:
    monkeypatch.setattr(links, "_settings", lambda: PipelineSettings.from_env(env))
    return link.get_link(None, ti_key=_ti(task_id, results))


def test_train_links_its_mlflow_run_where_people_reach_mlflow(monkeypatch):
    trained = {"train": TRAINED}
    assert _link(links.MlflowRunLink(), "train", trained, monkeypatch) == \
        "http://mlflow:5000/#/experiments/4/runs/" + "a" * 32
    assert _link(links.MlflowRunLink(), "train", trained, monkeypatch,
                 RICE_MLFLOW_URL="http://127.0.0.1:5050/") == \
        "http://127.0.0.1:5050/#/experiments/4/runs/" + "a" * 32
    assert _link(links.MlflowRunLink(), "train", {}, monkeypatch) == ""  # failed: no link


def test_the_gate_links_the_model_card_once_it_judged_a_version(monkeypatch):
    results = {"train": TRAINED, "quality_gate": {"passed": False, "version": "7"}}
    assert _link(links.ModelCardLink(), "quality_gate", results, monkeypatch) == (
        "http://mlflow:5000/#/experiments/4/runs/" + "a" * 32
        + "/artifacts/model_card/MODEL_CARD.md")
    assert _link(links.ModelCardLink(), "quality_gate", {"train": TRAINED}, monkeypatch) == ""


def test_push_and_attest_link_the_manifest_by_digest(monkeypatch):
    pushed = f"pushing layers\n127.0.0.1:5000/rice-classifier@{DIGEST}\n"
    assert _link(links.RegistryImageLink(), "push_image", {"push_image": pushed}, monkeypatch) \
        == f"http://127.0.0.1:5000/v2/rice-classifier/manifests/{DIGEST}"
    image = Image(image="r.example/rice:1", latest="r.example/rice:latest",
                  digest_ref=f"registry.example:443/ml/rice@{DIGEST}", digest=DIGEST)
    assert _link(links.RegistryImageLink(), "attest_image", {"attest_image": image},
                 monkeypatch) == f"https://registry.example:443/v2/ml/rice/manifests/{DIGEST}"


def test_roll_out_links_the_served_version_only_when_it_served(monkeypatch):
    served = Served(served=True, summary="serving v7 at 100 %", model_version="7",
                    reference=f"127.0.0.1:5000/rice@{DIGEST}", seconds=30.0)
    assert _link(links.ServedVersionLink(), "roll_out", {"roll_out": served}, monkeypatch,
                 RICE_ROLLOUT_PORT="8601") == "http://127.0.0.1:8601/version"
    rolled_back = {"roll_out": {**served.__dict__, "served": False}}
    assert _link(links.ServedVersionLink(), "roll_out", rolled_back, monkeypatch) == ""


def test_roll_out_links_the_rollout_graph_in_prometheus_served_or_rolled_back(monkeypatch):
    from urllib.parse import parse_qs, urlsplit

    served = Served(served=True, summary="serving v7 at 100 %", model_version="7",
                    reference=f"127.0.0.1:5000/rice@{DIGEST}", seconds=130.0)
    monkeypatch.setattr("time.time", lambda: 1_796_665_600.0)  # 2026-12-07 17:46:40 UTC
    url = _link(links.RolloutGraphLink(), "roll_out", {"roll_out": served}, monkeypatch,
                RICE_PROMETHEUS_URL="http://127.0.0.1:9090/")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "127.0.0.1:9090", "/graph")
    query = parse_qs(parts.query)
    assert query["g0.expr"] == [links.ROLLOUT_QUERY]
    assert query["g0.range_input"] == ["5m"]  # 130 s of rollout and a minute each side
    assert query["g0.end_input"] == ["2026-12-07 17:47"]
    rolled_back = {"roll_out": {**served.__dict__, "served": False}}
    assert _link(links.RolloutGraphLink(), "roll_out", rolled_back, monkeypatch,
                 RICE_PROMETHEUS_URL="http://127.0.0.1:9090").startswith("http://127.0.0.1:9090")
    # No Prometheus, no rollout, or a result that is not one: no link.
    assert _link(links.RolloutGraphLink(), "roll_out", {"roll_out": served}, monkeypatch) == ""
    assert _link(links.RolloutGraphLink(), "roll_out", {}, monkeypatch,
                 RICE_PROMETHEUS_URL="http://127.0.0.1:9090") == ""
    for seconds in (-1, "30", True, 1e9):
        odd = {"roll_out": {**served.__dict__, "seconds": seconds}}
        assert _link(links.RolloutGraphLink(), "roll_out", odd, monkeypatch,
                     RICE_PROMETHEUS_URL="http://127.0.0.1:9090") == "", seconds
    assert _link(links.RolloutGraphLink(), "roll_out", {"roll_out": served}, monkeypatch,
                 RICE_PROMETHEUS_URL="javascript:alert(1)") == ""


@pytest.mark.parametrize("hostile", [
    "javascript:alert(1)", "http://ok.example/\" onmouseover=\"x", "data:text/html,<b>",
    "https://a.example/\nX-Injected: 1", "ftp://files.example/pr", 42, None])
def test_a_pull_request_link_is_one_plain_http_url_or_nothing(monkeypatch, hostile):
    results = {"open_pull_request": {"pull_request": hostile}}
    assert _link(links.PullRequestLink(), "open_pull_request", results, monkeypatch) == ""
    results = {"open_pull_request": {"pull_request": "https://github.example/acme/rice/pull/3"}}
    assert _link(links.PullRequestLink(), "open_pull_request", results, monkeypatch) == \
        "https://github.example/acme/rice/pull/3"


@pytest.mark.parametrize("reference", [
    f"127.0.0.1:5000/rice@sha256:{'c' * 63}", f"127.0.0.1:5000/../rice@{DIGEST}",
    f"127.0.0.1:5000/rice@{DIGEST}\nmore", f"javascript:alert(1)/x@{DIGEST}", ""])
def test_a_reference_that_is_not_a_pushed_digest_links_nowhere(reference):
    assert links.manifest_url(reference) == ""


@pytest.mark.parametrize(("trained", "why"), [
    ({**TRAINED.__dict__, "run_id": "x' or 1=1"}, "run id"),
    ({**TRAINED.__dict__, "experiment_id": "4/../../admin"}, "experiment id"),
    ({**TRAINED.__dict__, "tracking_uri": "file:///mlruns"}, "a file store has no page"),
])
def test_an_mlflow_link_needs_every_part_checked(trained, why):
    assert links.mlflow_run_url(PipelineSettings.from_env({}), trained) == "", why


def test_the_rollout_graph_counts_the_endpoints_the_verdicts_count():
    from rice_mlops.release.rollout.verdicts import PREDICTION_ENDPOINTS

    assert f'endpoint=~"{"|".join(PREDICTION_ENDPOINTS)}"' in links.ROLLOUT_QUERY
