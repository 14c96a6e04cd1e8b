"""Keras classifiers that take raw RGB pixels (0-255, any size) and resize and scale inside.

Keeping the preprocessing in the graph gives MLflow pyfunc, the TFLite export and the serving
image one input contract; DESIGN.md measured 97.7 % vs 85.1 % on the seed's model for two
resize policies a client could silently pick.
"""

from __future__ import annotations

import keras
from keras import layers

from rice_mlops.compute.training_config import ARCHITECTURES, DEFAULT_ARCHITECTURE


def _preprocess(inputs: keras.KerasTensor, image_size: int) -> keras.KerasTensor:
    x = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(inputs)
    return layers.Rescaling(1.0 / 255.0, name="scale")(x)


def _conv_bn(x: keras.KerasTensor, filters: int, strides: int = 1) -> keras.KerasTensor:
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def _rice_cnn(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    # A strided stem and batch norm let a small network train at a high learning rate on CPU;
    # grain shape and size survive downsampling, so width goes to later, cheaper stages.
    x = _conv_bn(x, 24, strides=2)
    x = _conv_bn(x, 32)
    x = layers.MaxPooling2D()(x)
    x = _conv_bn(x, 64)
    x = layers.MaxPooling2D()(x)
    x = _conv_bn(x, 96)
    x = layers.MaxPooling2D()(x)
    x = _conv_bn(x, 128)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


def _squeeze_excite(x: keras.KerasTensor, ratio: int = 4) -> keras.KerasTensor:
    # Channel attention (Hu et al., 2018): a grain's tip or chalky spot can weigh more than
    # the field of black around it, for the cost of two tiny dense layers per stage.
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = layers.Dense(channels // ratio, activation="relu")(s)
    s = layers.Dense(channels, activation="sigmoid")(s)
    return layers.Multiply()([x, s])


def _patch_cnn(x: keras.KerasTensor, num_classes: int, excite: bool) -> keras.KerasTensor:
    # A larger input at nearly a small one's cost: a non-overlapping patch stem brings any
    # input down to 32 x 32 in one cheap layer, where the detail of the larger image is kept
    # as channels instead of being averaged away by the resize.
    patch = max(1, x.shape[1] // 32)
    x = layers.Conv2D(32, patch, strides=patch, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.ReLU()(x)
    widths = (48, 96, 128, 192)
    for filters in widths:
        x = _conv_bn(x, filters)
        if excite:
            x = _squeeze_excite(x)
        if filters != widths[-1]:  # pooled between stages, not after the last
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


def _seed_cnn(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    # The original project's network (DESIGN.md), kept as the baseline.
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


def build_model(num_classes: int, image_size: int, architecture: str = DEFAULT_ARCHITECTURE):
    """A model from raw (N, H, W, 3) float pixels to (N, num_classes) probabilities."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {ARCHITECTURES}")
    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
    x = _preprocess(inputs, image_size)
    heads = {"rice_cnn": _rice_cnn, "seed_cnn": _seed_cnn,
             "patch_cnn": lambda x, n: _patch_cnn(x, n, excite=False),
             "patch_se": lambda x, n: _patch_cnn(x, n, excite=True)}
    return keras.Model(inputs, heads[architecture](x, num_classes), name=architecture)
