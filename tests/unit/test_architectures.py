"""Every architecture the CLI and the DAG accept builds from raw pixels of any size, exports
to TFLite, and the TFLite file answers as the Keras model does: what the release zone serves
is what was trained, whichever recipe. The default (`rice_cnn`) is held to it by every
training, whose export check fails past PARITY_TOLERANCE, so it is not exported again here."""

from __future__ import annotations

import numpy as np
import pytest

from rice_mlops.compute.training_config import ARCHITECTURES, DEFAULT_ARCHITECTURE


@pytest.mark.parametrize("architecture", [a for a in ARCHITECTURES
                                          if a != DEFAULT_ARCHITECTURE])
def test_each_architecture_exports_to_tflite_with_the_same_answers(architecture, tmp_path):
    import keras

    from rice_mlops.compute.export import export_tflite, parity
    from rice_mlops.compute.model import build_model

    keras.utils.set_random_seed(5)
    model = build_model(5, 96, architecture)
    images = np.random.default_rng(1).integers(0, 255, (3, 120, 100, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    assert expected.shape == (3, 5)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)
    exported = export_tflite(model, tmp_path / "model.tflite")
    assert parity(model, exported, images) <= 2e-5


def test_an_unknown_architecture_is_refused_with_the_choices():
    from rice_mlops.compute.model import build_model

    with pytest.raises(ValueError, match="patch_se"):
        build_model(5, 64, "resnet9000")
