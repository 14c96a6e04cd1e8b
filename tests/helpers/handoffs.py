"""Typed hand-offs for unit tests, with plausible defaults; a test names only what it tests."""

from __future__ import annotations

from rice_mlops.core.handoffs import Dataset, Gate, Image, Staged, Trained

RUN = "a" * 32


def trained(run_id: str = RUN, **fields) -> Trained:
    values = {"run_id": run_id, "model_uri": "models:/m-" + "f" * 32, "model_id": "m-" + "f" * 32,
              "experiment_id": "1", "tracking_uri": "http://mlflow:5000", "image_size": 64,
              "classes": ("Arborio", "Basmati"), "metrics": {"test_accuracy": 0.99},
              "dataset_fingerprint": "sha256:" + "d" * 64, "epochs_run": 1,
              "code_digest": "sha256:" + "c" * 64, "artifact_sha256": None}
    return Trained(**{**values, **fields})


def dataset(data_dir: str = "/data", **fields) -> Dataset:
    values = {"data_dir": data_dir, "fingerprint": "sha256:" + "d" * 64,
              "classes": ("Arborio", "Basmati"), "counts": {}}
    return Dataset(**{**values, **fields})


def gate(version: str = "3", **fields) -> Gate:
    return Gate(**{"passed": True, "reason": "ok", "version": version, "test_accuracy": 0.99,
                   **fields})


def staged(tflite_sha256: str = "0" * 64, **fields) -> Staged:
    return Staged(**{"staging_dir": "/staging", "files": 5, "tflite_sha256": tflite_sha256,
                     **fields})


def image(digest_ref: str, digest: str, **fields) -> Image:
    repository = digest_ref.split("@", 1)[0]
    return Image(**{"image": f"{repository}:tag", "latest": f"{repository}:latest",
                    "digest_ref": digest_ref, "digest": digest, **fields})
