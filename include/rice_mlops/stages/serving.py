"""Serving: the pushed image in front of users, behind the serving proxy (release zone).

`roll_out` runs on the Docker queue after the pull request and before `promote`: the image must
verify against the deployment's own key (signature, provenance of this run, SBOM, the model in
the image) before a container starts; then shadow, the canary steps and 100 %, each decided on
measured numbers (`rice_mlops.release.rollout`). A breached budget rolls back: stable keeps serving,
the candidate is stopped, and since `promote` has not run, `champion` never moved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rice_mlops.core.handoffs import Gate, Image, Served, Trained
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.core.vocabulary import DAG_ID
from rice_mlops.release.image import run_image_plan
from rice_mlops.stages.common import checked_handoffs, checked_request
from rice_mlops.stages.connections import prometheus_windows, registry_host

log = logging.getLogger(__name__)
ROLLOUT_TASK = "roll_out"


def layout(settings: PipelineSettings):
    from rice_mlops.release.rollout.engine import Layout

    return Layout(root=settings.release_root / "serving", proxy_image=settings.rollout_proxy_image,
                  name=settings.rollout_name, proxy_port=settings.rollout_port,
                  slot_ports=settings.rollout_slot_ports,
                  labelling_rate=settings.labelling_sample_rate,
                  shared_gid=settings.serving_gid or None,
                  network=settings.rollout_network, addresses=settings.rollout_addresses,
                  door_network=settings.rollout_door_network)


def plan(settings: PipelineSettings):
    from rice_mlops.release.rollout.driver import Plan
    from rice_mlops.release.rollout.verdicts import Budgets

    return Plan(steps=settings.rollout_steps, window_seconds=settings.rollout_window_seconds,
                replay_rate=settings.rollout_replay_rate,
                budgets=Budgets(min_requests=settings.rollout_min_requests,
                                min_agreement=settings.rollout_min_agreement,
                                max_p99_ms=settings.rollout_max_p99_ms))


def registry_auth(settings: PipelineSettings) -> dict | None:
    """The registry connection's login for a pull (kept in memory, never logged)."""
    from airflow.sdk import BaseHook

    if registry_host(settings.registry_conn_id) is None:
        return None
    conn = BaseHook.get_connection(settings.registry_conn_id)
    return {"username": conn.login or "", "password": conn.password or ""}


@checked_handoffs
def roll_out(settings: PipelineSettings, params: Mapping, trained: Trained, gate: Gate,
             image: Image | None, dag_run_id: str, champion_events: Iterable,
             serving_event=None) -> Served:
    from rice_mlops.compute.champion import latest_record
    from rice_mlops.release.rollout.driver import Rollout, RolloutRefused, smoke_images
    from rice_mlops.release.rollout.engine import DeployError, Engine
    from rice_mlops.stages.release import checked_ledger, record_refusal, verify_pushed

    if not settings.rollout:
        raise AirflowSkipException("RICE_ROLLOUT is off: the image is pushed and champion "
                                   "moves, but nothing here serves it")
    if image is None or not image.digest:
        raise AirflowSkipException("no image was pushed: nothing to serve")
    checked_ledger(settings, dag_run_id, trained.run_id, gate.version)
    request = checked_request(settings, params)
    image_plan = run_image_plan(trained, settings, request.source_commit,
                                    registry_host(settings.registry_conn_id))
    record = latest_record(champion_events, DAG_ID)

    def verify(reference: str) -> None:
        if reference != image.digest_ref:
            raise AirflowFailException(f"{reference} is not the pushed {image.digest_ref}")
        verify_pushed(settings, request, trained, image, version=str(gate.version),
                      champion_version=record.version if record else None)

    engine = Engine(settings.docker_socket, layout(settings))
    try:
        windows = prometheus_windows(settings.prometheus_conn_id)
        log.info("canary windows measured by %s",
                 "Prometheus" if windows else "the servers' own /metrics")
        rollout = Rollout(engine, plan(settings), smoke_images(image_plan.smoke_dir),
                          registry_auth(settings), windows)
        outcome = rollout.roll_out(image.digest_ref, str(gate.version), verify)
    except RolloutRefused as exc:
        record_refusal(str(exc))
        raise AirflowFailException(str(exc)) from None
    except DeployError as exc:  # the engine or a container: a retry may see it start
        raise RuntimeError(f"rollout of v{gate.version} did not complete: {exc}") from None
    finally:
        engine.close()
    for verdict in outcome.verdicts:
        log.info("%s %s", "passed:" if verdict.passed else "FAILED:", verdict.reason)
    errors = sum(count for status, count in outcome.client_statuses.items()
                 if not 200 <= status < 300)
    if not outcome.served:
        record_refusal(outcome.summary)
        raise AirflowFailException(outcome.summary)
    served = Served(served=True, summary=outcome.summary, model_version=str(gate.version),
                    reference=image.digest_ref, seconds=outcome.seconds,
                    verdicts=tuple(v.reason for v in outcome.verdicts), client_errors=errors)
    record_serving(served, outcome.state, serving_event)
    return served


def roll_back(settings: PipelineSettings, params: Mapping, who: str,
              serving_event=None) -> Served:
    """`rice_rollback`: an earlier deployment back at 100 % at once, once its signature and
    attestations verify against the deployment's key (a rollback is allowed to go back in
    versions, nothing else is relaxed)."""
    import re

    from rice_mlops.release.attestation import VerificationError, verify_image
    from rice_mlops.release.oci import RegistryError, split_reference
    from rice_mlops.release.rollout import state as st
    from rice_mlops.release.rollout.driver import Rollout
    from rice_mlops.release.rollout.engine import DeployError, Engine
    from rice_mlops.release.rollout.state import RolloutRefused, choose_rollback
    from rice_mlops.release.signing import load_public_key, public_pem
    from rice_mlops.stages.release import pipeline_signing_key, registry_client

    version = (params or {}).get("model_version") or None
    if version is not None and not re.fullmatch(r"[1-9][0-9]{0,17}", str(version)):
        raise AirflowFailException(f"model_version {version!r} is not a model version number")
    serving_layout = layout(settings)
    try:
        target = choose_rollback(st.load(serving_layout.state_file), version)
    except (RolloutRefused, st.StateError) as exc:
        raise AirflowFailException(str(exc)) from None
    public = load_public_key(public_pem(pipeline_signing_key(settings)))

    def verify(reference: str) -> None:
        _, name, digest = split_reference(reference)
        host, client = registry_client(settings)
        with client:
            try:
                verify_image(client, name, digest, public,
                             rollback_to=int(target.model_version))
            except (VerificationError, RegistryError) as exc:
                raise RolloutRefused(f"{reference} does not verify: {exc}") from None

    why = f"rollback on demand by {who} to v{target.model_version}"
    engine = Engine(settings.docker_socket, serving_layout)
    try:
        outcome = Rollout(engine, plan(settings), (), registry_auth(settings)).roll_back_to(
            target.reference, target.model_version, verify, why)
    except RolloutRefused as exc:
        raise AirflowFailException(str(exc)) from None
    except DeployError as exc:
        raise RuntimeError(f"rollback to v{target.model_version} did not complete: {exc}"
                           ) from None
    finally:
        engine.close()
    if not outcome.served:
        raise AirflowFailException(outcome.summary)
    log.info("%s", outcome.summary)
    served = Served(served=True, summary=outcome.summary, model_version=target.model_version,
                    reference=target.reference, seconds=outcome.seconds)
    record_serving(served, outcome.state, serving_event)
    return served


def serving_record(served: Served, state) -> dict:
    """What the `rice_serving` event's extra and the version's tag say: which digest takes all
    traffic, since when, from which slot (plain JSON; Airflow adds the run that emitted it)."""
    stable = state.stable
    return {"model_version": served.model_version, "reference": served.reference,
            "percent": 100, "slot": stable.slot if stable else None,
            "since": stable.since if stable else None, "summary": served.summary}


def record_serving(served: Served, state, serving_event) -> None:
    """The asset event (the pipeline's record) and MLflow's `deployed` alias (a display)."""
    import json

    from rice_mlops.core import model_registry as registry

    record = serving_record(served, state)
    if serving_event is not None:
        serving_event.extra = record
    registry.mark_deployed(served.model_version, json.dumps(record, sort_keys=True))


def verify_recorded(settings: PipelineSettings, deployment) -> dict:
    """What `serving restore` checks before it starts the digest state.json names: the image
    verifies against this deployment's key (signature, provenance, SBOM, the model inside), is
    in this deployment's registry, and is signed as the model version the state records.
    Raises ValueError naming what failed; returns the verification report."""
    import httpx

    from rice_mlops.release.attestation import VerificationError, verify_image
    from rice_mlops.release.oci import RegistryError, split_reference
    from rice_mlops.release.signing import load_public_key, public_pem
    from rice_mlops.stages.release import pipeline_signing_key, registry_client

    try:
        where, name, digest = split_reference(deployment.reference)
        host, client = registry_client(settings)
    except AirflowSkipException as exc:  # no registry connection: nothing can be verified
        raise ValueError(f"{deployment.reference} cannot be verified: {exc}") from None
    if (where, name) != (host, settings.image_name):
        raise ValueError(f"{deployment.reference} is not an image of {host}/"
                         f"{settings.image_name}")
    public = load_public_key(public_pem(pipeline_signing_key(settings)))
    with client:
        try:
            report = verify_image(client, name, digest, public)
        except (VerificationError, RegistryError) as exc:
            raise ValueError(f"{deployment.reference} does not verify: {exc}") from None
        except httpx.HTTPError as exc:  # unverified is not verified: nothing starts
            raise ValueError(f"{deployment.reference} does not verify: the registry at {host} "
                             f"does not answer ({type(exc).__name__})") from None
    if str(report.get("model_version")) != str(deployment.model_version):
        raise ValueError(f"{deployment.reference} is signed as model "
                         f"v{report.get('model_version')}, not the v{deployment.model_version} "
                         "the serving state records")
    return report
