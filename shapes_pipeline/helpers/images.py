"""Encoded images as pixels: the one decoder that training, evaluation and the served
model share."""

from __future__ import annotations

import tensorflow as tf


def decode(image_bytes: tf.Tensor | bytes, image_size: int) -> tf.Tensor:
    """An encoded image (PNG, JPEG, GIF, BMP or WebP; grey, RGB, RGBA, palette or 16-bit) as
    RGB float32 pixels in [0, 255], resized to ``image_size`` square (bilinear).

    One function for training, evaluation and the served model, so they cannot disagree.
    Alpha is dropped, as a conversion to RGB does.
    """
    pixels = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    return tf.image.resize(tf.cast(pixels, tf.float32), (image_size, image_size))
