"""A serving image whose TFLite file is below the bar is refused inside the image by its smoke
test, whatever was reported: the release zone measures what it ships."""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_model_below_the_bar_is_refused_inside_the_image(tiny_real_dataset, mlflow_server,
                                                           docker_engine, staging_root,
                                                           tmp_path):
    import keras

    from rice_mlops.compute.export import export_tflite
    from rice_mlops.compute.model import build_model
    from rice_mlops.compute.training_config import TrainConfig
    from rice_mlops.compute.training_run import train
    from rice_mlops.core.fingerprint import file_sha256
    from rice_mlops.core.staged_artifacts import fetch
    from rice_mlops.release.image import build_args, build_command, image_names, prepare_context
    from rice_mlops.release.intake import BelowBar, smoke_set
    from rice_mlops.release.signing import generate_keypair, load_private_key

    result = train(TrainConfig(data_dir=tiny_real_dataset, epochs=1, batch_size=32,
                               experiment="it-broken-image"))
    staged = fetch(result["run_id"], result["model_uri"], staging_root)
    broken = staging_root / "broken-model"
    broken.mkdir()
    (broken / "labels.json").write_bytes((staged / "labels.json").read_bytes())
    keras.utils.set_random_seed(12345)  # an untrained network: same contract, chance answers
    export_tflite(build_model(len(result["classes"]), 64), broken / "model.tflite")
    # As if training had recorded these bytes and reported a fine accuracy for them.
    digests = {"tflite/model.tflite": file_sha256(broken / "model.tflite"),
               "model_meta/labels.json": file_sha256(broken / "labels.json")}
    key = load_private_key(generate_keypair(tmp_path / "keys")[0].read_bytes())
    metadata = {"run_id": result["run_id"], "model_version": "0", "source_commit": None}
    common = dict(metadata=metadata, digests=digests,
                  smoke_from=smoke_set(tiny_real_dataset, result["classes"]),
                  wheel_cache=staging_root / "wheels", signing_key=key)
    # The release zone's own LiteRT measurement refuses it before a build...
    with pytest.raises(BelowBar, match="release zone measured"):
        prepare_context(broken, staging_root / "refused-context", min_test_accuracy=0.97,
                        min_class_recall=0.9, **common)
    # ...and, were that step skipped, the smoke test refuses it inside the built image.
    context = prepare_context(broken, staging_root / "broken-context", min_test_accuracy=0.0,
                              min_class_recall=0.0, **common)
    names = image_names(None, "rice-classifier-broken", None, result["run_id"])
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    subprocess.run(["docker", *build_command(
        context, names, build_args(metadata, docker_engine["RICE_BASE_IMAGE"],
                                   docker_engine["RICE_BUILD_IMAGE"]))],
        env=env, check=True, capture_output=True, timeout=600)
    try:
        # The same container the DAG's smoke_test task runs: no network, smoke set read-only.
        smoke = subprocess.run(
            ["docker", "run", "--rm", "--network", "none",
             "-v", f"{context / 'smoke'}:/smoke:ro", "--entrypoint", "python3",
             names.immutable, "-m", "rice_mlops.serving.smoke", "--smoke-dir", "/smoke",
             "--min-test-accuracy", "0.97", "--min-class-recall", "0.9"],
            capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["docker", "rmi", names.immutable, names.latest], capture_output=True)
    assert smoke.returncode == 1, smoke.stdout + smoke.stderr
    assert "/ping answered 200" in smoke.stdout
    assert "smoke: REFUSED below the bar" in smoke.stdout
    assert "smoke: measured " in smoke.stdout.strip().splitlines()[-1]
