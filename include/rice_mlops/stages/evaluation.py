"""Evaluation: the quality gate and the model card of the version it registers.

Runs on the default worker (compute zone). The gate measures the staged TFLite file (checked
against the digest recorded at training) on the test split, against the bar and the champion
this pipeline recorded in Airflow's asset events; it hands on one `Gate` through XCom.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.core.handoffs import Dataset, Gate, Trained
from rice_mlops.core.run_policy import RunRequest
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.core.vocabulary import DAG_ID, MODEL_NAME
from rice_mlops.stages.common import checked_handoffs, checked_request, staged_dir, training_digests

log = logging.getLogger(__name__)


@checked_handoffs
def quality_gate(settings: PipelineSettings, params: Mapping, data: Dataset, trained: Trained,
                 champion_events: Iterable) -> Gate:
    """Register a version; decide against the bar and the champion the asset events record."""
    from rice_mlops.compute.champion import (
        ChampionMismatch,
        champion_predictions,
        latest_record,
    )
    from rice_mlops.compute.data import discover
    from rice_mlops.compute.gate import decide
    from rice_mlops.core import model_registry as registry
    from rice_mlops.serving.inference import file_outputs

    request = checked_request(settings, params)
    run_id = trained.run_id
    staged = staged_dir(settings, trained)
    _check_trained_bytes(staged / "model.tflite", trained)
    version = registry.register(run_id, trained.model_uri)
    record = latest_record(champion_events, DAG_ID)
    alias = registry.alias_version()
    notes = []
    if alias is not None and (record is None or alias != record.version):
        notes.append(f"MLflow's @champion points at v{alias}, which this pipeline did not "
                     f"promote{f' (it promoted v{record.version})' if record else ''}: ignored")
        log.warning(notes[-1])
    # Both models answer the same test images through the same interpreter: the challenger
    # from its staged (manifest-checked) TFLite file, the one that ships.
    dataset = discover(Path(data.data_dir))
    paths, labels = dataset.examples("test")
    probabilities, inputs = file_outputs(staged / "model.tflite", paths)
    predictions = [int(row.argmax()) for row in probabilities]
    champion, how, mismatch = None, "no champion recorded by this pipeline yet", None
    if record is not None and record.version != version:
        try:
            champion, how = champion_predictions(record, data.fingerprint, dataset.classes,
                                                 paths)
        except ChampionMismatch as exc:
            mismatch = str(exc)
    # The bar is held against the accuracy of these predictions (decide measures it), not
    # against the number training reported in XCom.
    result = decide(trained.metrics["test_accuracy"],
                    min_test_accuracy=request.min_test_accuracy,
                    max_regression=request.max_regression,
                    champion_version=record.version if champion is not None else None,
                    classes=dataset.classes, labels=labels, predictions=predictions,
                    champion_predictions=champion, min_class_recall=settings.min_class_recall,
                    alpha=settings.gate_alpha, confidence=settings.gate_confidence)
    passed, reason = result.passed and mismatch is None, result.reason
    if mismatch:
        reason = f"{mismatch}; {reason}"
    gate = Gate.from_result(result, passed=passed, reason=reason, version=version,
                            champion_comparison="; ".join([how, *notes]),
                            champion_record=record.as_dict() if record else None)
    registry.record_gate(run_id, version, passed, reason, details=gate.as_dict())
    _record_drift_reference(run_id, version, dataset.classes, probabilities, inputs)
    gate = replace(gate, model_card_sha256=_model_card(settings, request, data, trained, staged,
                                                       gate))
    log.log(logging.INFO if passed else logging.WARNING, "gate %s for v%s: %s (%s)\n%s",
            "PASSED" if passed else "FAILED, NOT SHIPPED", version, reason, how, gate.table)
    return gate


def _record_drift_reference(run_id: str, version: str, classes, probabilities, inputs) -> None:
    """What this version answers on its test split, for the monitoring to compare its
    prediction logs with: an artifact of the version's run, its sha256 a tag of the version."""
    from rice_mlops.core import model_registry as registry
    from rice_mlops.monitoring.drift import Reference, observe

    names = [classes[int(row.argmax())] for row in probabilities]
    rows = [[float(p) for p in row] for row in probabilities]
    reference = Reference(str(version), tuple(classes), observe(names, rows, inputs))
    registry.log_drift_reference(run_id, version, reference.to_json())


def _check_trained_bytes(tflite: Path, trained: Trained) -> None:
    """The staged TFLite file is the one training recorded (not only what its manifest says)."""
    from rice_mlops.core.fingerprint import file_sha256

    recorded = training_digests(trained)["tflite/model.tflite"]
    if (actual := file_sha256(tflite)) != recorded:
        raise AirflowFailException(f"{tflite} has sha256 {actual}, not the {recorded} recorded "
                                   "at training: not gated")


def _model_card(settings: PipelineSettings, request: RunRequest, data: Dataset,
                trained: Trained, staged: Path, gate: Gate) -> str:
    """Render this version's MODEL_CARD.md beside its staged artifacts and log it to MLflow."""
    import hashlib
    import json

    from rice_mlops.compute import model_card
    from rice_mlops.core import model_registry as registry

    text = model_card.render(
        model_name=MODEL_NAME, version=gate.version, run_id=trained.run_id,
        source_commit=request.source_commit, fingerprint=data.fingerprint,
        counts=data.counts, metrics=json.loads((staged / "metrics.json").read_text()),
        gate=gate.as_dict(), confidence=settings.gate_confidence)
    target = trained.model_card(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    registry.log_model_card(trained.run_id, gate.version, text, digest)
    return digest
