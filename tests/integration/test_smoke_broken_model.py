"""A serving image whose TFLite file does not match the MLflow model fails its smoke test."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_mismatched_tflite_fails_the_smoke_test(tiny_real_dataset, mlflow_server, docker_engine,
                                                staging_root, tmp_path):
    import keras

    from rice_mlops.artifacts import fetch
    from rice_mlops.config import TrainConfig
    from rice_mlops.image import (
        build_args,
        build_command,
        image_names,
        prepare_context,
        smoke_images,
    )
    from rice_mlops.model import build_model
    from rice_mlops.signing import generate_keypair, load_private_key
    from rice_mlops.tflite_export import export_tflite
    from rice_mlops.training import train

    result = train(TrainConfig(data_dir=tiny_real_dataset, epochs=1, batch_size=32,
                               experiment="it-broken-image"))
    staged = fetch(result["run_id"], result["model_uri"], staging_root)
    broken = staging_root / "broken-model"
    shutil.copytree(staged, broken)
    keras.utils.set_random_seed(12345)  # another network: same contract, other answers
    export_tflite(build_model(len(result["classes"]), 64), broken / "model.tflite")

    metadata = {"run_id": result["run_id"], "model_version": "0", "source_commit": None}
    context = prepare_context(broken, staging_root / "broken-context", metadata=metadata,
                              model_uri=result["model_uri"],
                              smoke_from=smoke_images(tiny_real_dataset),
                              wheel_cache=staging_root / "wheels",
                              signing_key=load_private_key(
                                  generate_keypair(tmp_path / "keys")[0].read_bytes()))
    names = image_names(None, "rice-classifier-broken", None, result["run_id"])
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    subprocess.run(["docker", *build_command(
        context, names, build_args(metadata, docker_engine["RICE_BASE_IMAGE"]))],
        env=env, check=True, capture_output=True, timeout=600)
    try:
        # The same container the DAG's smoke_test task runs: no network, smoke set read-only.
        smoke = subprocess.run(
            ["docker", "run", "--rm", "--network", "none",
             "-v", f"{context / 'smoke'}:/smoke:ro", "--entrypoint", "python3",
             names.immutable, "-m", "rice_mlops.serving.smoke", "--smoke-dir", "/smoke"],
            capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["docker", "rmi", names.immutable, names.latest], capture_output=True)
    assert smoke.returncode == 1, smoke.stdout + smoke.stderr
    assert "/ping answered 200" in smoke.stdout
    assert "MISMATCH" in smoke.stdout
    assert "does not reproduce the MLflow model" in smoke.stdout
