"""Fixtures the unit test modules share: the small Keras model and its exported directory,
served in a thread (test_serving.py, test_serving_bounds.py, test_prediction_log.py,
test_labelling.py); a synthetic dataset and a staged model_artifact directory with its
digests and a signing key (test_release_zone.py, test_release_docker_task.py)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from rice_mlops.core.fingerprint import file_sha256
from tests.helpers.datasets import CLASSES
from tests.helpers.serving_in_thread import run_server


@pytest.fixture(scope="module")
def keras_model():
    import keras

    from rice_mlops.compute.model import build_model

    keras.utils.set_random_seed(3)
    return build_model(len(CLASSES), 32)


@pytest.fixture(scope="module")
def model_dir(keras_model, tmp_path_factory):
    from rice_mlops.compute.export import export_tflite

    directory = tmp_path_factory.mktemp("served-model")
    export_tflite(keras_model, directory / "model.tflite")
    (directory / "labels.json").write_text(json.dumps({"classes": CLASSES}))
    (directory / "metadata.json").write_text(json.dumps({
        "model_name": "rice-classifier", "model_version": "7", "run_id": "abc123",
        "source_commit": "9fceb02", "image_size": 32}))
    return directory


@pytest.fixture(scope="module")
def served(model_dir):
    yield from run_server(model_dir, max_body_bytes=400_000)


@pytest.fixture(scope="module")
def server(served):
    return served[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from rice_mlops.compute.data.synth import generate

    root = tmp_path_factory.mktemp("rice-data")
    generate(root, per_class=10, seed=1)
    return root


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    """A staged model_artifact directory as fetch_artifacts leaves it, with a planted MLmodel
    whose loader_module (in code/) and pickle would each write a marker if anything ran them."""
    import keras

    from rice_mlops.compute.export import export_tflite
    from rice_mlops.compute.model import build_model

    staged = tmp_path_factory.mktemp("staged") / "model_artifact"
    staged.mkdir()
    keras.utils.set_random_seed(3)
    export_tflite(build_model(len(CLASSES), 32), staged / "model.tflite")
    (staged / "labels.json").write_text(json.dumps({"classes": CLASSES}))
    marker = staged.parent / "PLANTED-CODE-RAN"
    (staged / "code").mkdir()
    (staged / "code" / "evil_loader.py").write_text(textwrap.dedent(f"""\
        from pathlib import Path
        Path({str(marker)!r}).write_text("loader_module imported")
        def _load_pyfunc(path):
            Path({str(marker)!r}).write_text("loader_module loaded")
        """))
    (staged / "MLmodel").write_text(textwrap.dedent("""\
        flavors:
          python_function:
            loader_module: evil_loader
            code: code
            data: data
            env: {virtualenv: python_env.yaml}
        """))

    class Trap:
        def __reduce__(self):
            return (Path(marker).write_text, ("pickle loaded",))

    import pickle

    (staged / "data").mkdir()
    (staged / "data" / "model.pkl").write_bytes(pickle.dumps(Trap()))
    return staged


@pytest.fixture(scope="module")
def digests(trained_dir) -> dict[str, str]:
    return {"tflite/model.tflite": file_sha256(trained_dir / "model.tflite"),
            "model_meta/labels.json": file_sha256(trained_dir / "labels.json")}


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    from rice_mlops.release.signing import generate_keypair

    private, _ = generate_keypair(tmp_path_factory.mktemp("keys") / "k")
    return private
