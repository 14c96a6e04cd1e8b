"""MLflow Model Registry: one version per training run, the `champion` alias, gate tags."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rice_mlops.training import FINGERPRINT_TAG

log = logging.getLogger(__name__)

MODEL_NAME = "rice-classifier"
CHAMPION_ALIAS = "champion"
GATE_TAG = "rice.gate"
GATE_REASON_TAG = "rice.gate_reason"


@dataclass(frozen=True)
class Champion:
    version: str
    run_id: str
    fingerprint: str | None
    test_accuracy: float | None
    classes: list[str]

    def model_uri(self, name: str = MODEL_NAME) -> str:
        return f"models:/{name}/{self.version}"


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def register(run_id: str, model_uri: str, name: str = MODEL_NAME) -> str:
    """The registry version of this run's model, created once however often it is called."""
    import mlflow

    existing = _client().search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:
        version = min(existing, key=lambda v: int(v.version)).version
        log.info("run %s is already registered as %s v%s", run_id, name, version)
        return version
    version = mlflow.register_model(model_uri, name, tags={"rice.run_id": run_id}).version
    log.info("registered run %s as %s v%s", run_id, name, version)
    return version


def champion(name: str = MODEL_NAME) -> Champion | None:
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    run = client.get_run(version.run_id)
    classes = run.data.params.get("classes", "")
    return Champion(
        version=version.version,
        run_id=version.run_id,
        fingerprint=run.data.tags.get(FINGERPRINT_TAG),
        test_accuracy=run.data.metrics.get("test_accuracy"),
        classes=classes.split(",") if classes else [],
    )


def accuracy_on_split(model_uri: str, paths: list[Path], labels: list[int], chunk: int = 64
                      ) -> float:
    """Accuracy of a registered model on raw images (its resizing is inside the model)."""
    import mlflow
    from PIL import Image

    model = mlflow.pyfunc.load_model(model_uri)
    correct = 0
    for start in range(0, len(paths), chunk):
        batch = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32)
                 for p in paths[start:start + chunk]]
        shapes = {b.shape for b in batch}
        predictions = (np.concatenate([np.asarray(model.predict(b[None])) for b in batch])
                       if len(shapes) > 1 else np.asarray(model.predict(np.stack(batch))))
        correct += int((predictions.argmax(axis=1) == np.asarray(labels[start:start + chunk]))
                       .sum())
    return correct / max(1, len(paths))


def champion_accuracy(champ: Champion, fingerprint: str, data_dir: Path,
                      name: str = MODEL_NAME) -> tuple[float | None, str]:
    """The champion's test accuracy on the challenger's test split, and how it was obtained."""
    from rice_mlops.data import discover

    if champ.fingerprint == fingerprint and champ.test_accuracy is not None:
        return champ.test_accuracy, "same dataset fingerprint: champion's logged test accuracy"
    dataset = discover(data_dir)
    if champ.classes and champ.classes != dataset.classes:
        return None, (f"champion classes {champ.classes} differ from {dataset.classes}: "
                      "no comparison possible")
    paths, labels = dataset.examples("test")
    accuracy = accuracy_on_split(champ.model_uri(name), paths, labels)
    return accuracy, "dataset changed: champion re-evaluated on the challenger's test split"


def record_gate(run_id: str, version: str, passed: bool, reason: str,
                name: str = MODEL_NAME) -> None:
    client = _client()
    verdict = "passed" if passed else "failed"
    for key, value in ((GATE_TAG, verdict), (GATE_REASON_TAG, reason[:5000])):
        client.set_tag(run_id, key, value)
        client.set_model_version_tag(name, version, key, value)


def promote(version: str, tags: dict[str, str] | None = None, name: str = MODEL_NAME) -> None:
    client = _client()
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    log.info("%s v%s is now @%s", name, version, CHAMPION_ALIAS)


def resolve(model_uri: str) -> dict:
    """Run id, registered name/version (when known) and tags behind a `models:/` URI."""
    import mlflow

    client = _client()
    body = model_uri.removeprefix("models:/")
    name = version = None
    if body.startswith("m-"):
        run_id = mlflow.get_logged_model(body.split("/")[0]).source_run_id
    elif "@" in body:
        name, alias = body.split("@", 1)
        found = client.get_model_version_by_alias(name, alias)
        run_id, version = found.run_id, found.version
    elif "/" in body:
        name, version = body.split("/", 1)
        run_id = client.get_model_version(name, version).run_id
    else:
        raise ValueError(f"cannot resolve {model_uri!r}: use models:/m-<id>, "
                         "models:/<name>/<version> or models:/<name>@<alias>")
    run = client.get_run(run_id)
    return {"run_id": run_id, "model_name": name, "model_version": version,
            "tags": run.data.tags, "params": run.data.params}


def tag_image(run_id: str, version: str, image: dict, name: str = MODEL_NAME) -> None:
    """Record the pushed image (reference with digest) on the run and the model version."""
    client = _client()
    for key, value in (("rice.image", image["digest_ref"]), ("rice.image_tag", image["image"])):
        client.set_tag(run_id, key, value)
        client.set_model_version_tag(name, version, key, value)


def version_metrics(version: str, name: str = MODEL_NAME) -> dict:
    """Test metrics of a registered version's run, for comparisons in the pull request."""
    client = _client()
    run = client.get_run(client.get_model_version(name, version).run_id)
    metrics = run.data.metrics
    return {"version": version, "test_accuracy": metrics.get("test_accuracy"),
            "test_macro_f1": metrics.get("test_macro_f1"),
            "per_class_recall": {key.removeprefix("test_recall_"): value
                                 for key, value in metrics.items()
                                 if key.startswith("test_recall_")}}
