"""tf.data input: decode and resize once, cache in memory, augment only the training split.

Images are resized here with the same operation as the model's own Resizing layer, so the
cached tensors are exactly what the model would compute from the raw file (resizing an S x S
image to S x S is the identity), and the model still accepts raw images of any size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf


def decode_and_resize(path: tf.Tensor, image_size: int) -> tf.Tensor:
    raw = tf.io.read_file(path)
    # INTEGER_ACCURATE decodes JPEG bit-identically to Pillow, which the serving image uses;
    # TF's default fast IDCT is off by up to 5 levels and shifted probabilities by 7e-3.
    image = tf.cond(
        tf.io.is_jpeg(raw),
        lambda: tf.io.decode_jpeg(raw, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_png(raw, channels=3),
    )
    image = tf.cast(image, tf.float32)
    image.set_shape([None, None, 3])
    return tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=False)


def cached_split(paths: Sequence[Path], labels: Sequence[int], image_size: int) -> tf.data.Dataset:
    """(image, label) pairs decoded once; iterate it once to fill the cache."""
    ds = tf.data.Dataset.from_tensor_slices(
        ([str(p) for p in paths], tf.constant(list(labels), dtype=tf.int32))
    )
    ds = ds.map(
        lambda p, y: (decode_and_resize(p, image_size), y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.cache()


def _augment(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    # Grains lie at a uniform random angle on a black background, so flips and quarter turns
    # are exact symmetries of the data: free extra views that cost no interpolation.
    images = tf.image.stateless_random_flip_left_right(images, seed=seed)
    images = tf.image.stateless_random_flip_up_down(images, seed=seed + 1)
    turn = tf.random.stateless_uniform([], seed=seed + 2, maxval=2, dtype=tf.int32)
    images = tf.cond(turn == 1, lambda: tf.image.rot90(images), lambda: images)
    return images, labels


def training_batches(
    cached: tf.data.Dataset, batch_size: int, seed: int, augment: bool = True
) -> tf.data.Dataset:
    """Shuffled, augmented batches; the same seed gives the same batches in the same order."""
    size = cached.cardinality()
    ds = cached.shuffle(size, seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        # One stateless seed per batch position and epoch, so augmentation is reproducible.
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip((ds, counter)).map(
            lambda batch, i: _augment(
                batch[0], batch[1], tf.stack([tf.constant(seed, tf.int64), i])
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_batches(cached: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    return cached.batch(batch_size).prefetch(tf.data.AUTOTUNE)
