"""Export a Keras model to TFLite and measure how closely the export agrees with Keras."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

PARITY_TOLERANCE = 1e-4


class TFLiteParityError(RuntimeError):
    """The TFLite export disagrees with the Keras model beyond the tolerance."""


def export_tflite(model, path: Path) -> Path:
    """Write `model` as a TFLite flatbuffer with a dynamic (N, H, W, 3) input."""
    import keras
    import tensorflow as tf

    # `model.export()` traces with training=None, and Keras 3.15 then runs BatchNormalization
    # behind a Resizing layer with batch statistics (measured: outputs off by up to 0.8).
    # An explicit training=False endpoint exports what `predict` computes.
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32, name="image")],
    )
    with tempfile.TemporaryDirectory(prefix="rice-savedmodel-") as saved:
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        path.write_bytes(converter.convert())
    return path


def tflite_predict(tflite_path: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities for a batch of raw float32 (N, H, W, 3) pixels, one invoke per image."""
    from rice_mlops.serving.inference import TFLiteModel

    model = TFLiteModel(tflite_path)
    return np.concatenate([model.probabilities(image[None])
                           for image in np.asarray(images, dtype=np.float32)])


def parity(model, tflite_path: Path, images: np.ndarray) -> float:
    """Largest absolute probability difference between Keras and TFLite on `images`."""
    keras_probabilities = model.predict(np.asarray(images, dtype=np.float32), verbose=0)
    return float(np.max(np.abs(keras_probabilities - tflite_predict(tflite_path, images))))
