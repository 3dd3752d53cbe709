"""The network: any ``keras.applications`` backbone, frozen, under the notebook's head, and
the traced functions the serving model is made of (``shapes_pipeline.helpers.serving`` saves them).

The network takes raw RGB pixels in [0, 255] and applies the backbone's own
``preprocess_input`` inside, so whoever loads the saved model (evaluate, export, serving)
cannot get the scaling wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from shapes_pipeline.helpers.shards import prefetched
from shapes_pipeline.helpers.step import InputError

TracedFunction = tf.types.experimental.PolymorphicFunction


def backbone_class(name: str) -> type:
    cls = getattr(keras.applications, name, None)
    if not callable(cls) or not name[:1].isupper():
        raise InputError(f"backbone {name!r} is not a keras.applications model")
    return cls


class Preprocess(keras.layers.Layer):
    """The named backbone's ``preprocess_input``, as a layer so it is saved with the model.

    Each backbone's function is in the public ``keras.applications`` module named as the
    last part of the backbone class's (internal) module, ``mobilenet`` for ``MobileNet``."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        module = backbone_class(backbone).__module__.rsplit(".", 1)[-1]
        self._preprocess = getattr(keras.applications, module).preprocess_input

    def call(self, inputs):
        return self._preprocess(inputs)


def feature_extractor(backbone: keras.Model, name: str, image_size: int) -> keras.Model:
    """Raw pixels -> pooled backbone features (the notebook's GlobalMaxPooling2D)."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = Preprocess(name)(inputs)
    x = backbone(x, training=False)
    outputs = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name="features")


def head(n_features: int, n_classes: int, seed: int | None = None) -> keras.Model:
    """The notebook's head, exactly: Dense 128/64/32 relu, Dropout 0.5, softmax.

    ``seed`` fixes the dropout masks, so two heads with the same weights train alike.
    """
    return keras.Sequential(
        [
            keras.Input((n_features,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.5, seed=seed),
            # float32 even under mixed precision, so probabilities and loss stay exact
            keras.layers.Dense(n_classes, activation="softmax", dtype="float32"),
        ],
        name="head",
    )


def classifier(features: keras.Model, head_model: keras.Model) -> keras.Model:
    """The full image -> probabilities model, sharing the trained layers."""
    return keras.Model(features.input, head_model(features.output), name="classifier")


def image_spec(image_size: int) -> tf.TensorSpec:
    return tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name="images")


def compiled(fn: Callable[[tf.Tensor], tf.Tensor], image_size: int) -> TracedFunction:
    """``fn`` on image batches of any size, traced on its first call only.

    Keras' ``predict`` traces again for a short last batch and for every new call, and
    tracing a backbone's graph is among a step's largest costs (docs/benchmarks.md). A
    function that calls this one reuses its trace, so the serving function costs almost
    nothing more. It is traced here, up front: traced on its first batch from a ``tf.data``
    iterator instead, extraction was measurably slower.
    """
    traced = tf.function(fn, input_signature=[image_spec(image_size)])
    traced.get_concrete_function()
    return traced


# float32 weights per 64 bytes (Eigen's alignment): each weight's slice of the packed
# variable starts on such a boundary, so tf.split hands out views of it, not copies.
_ALIGN = 16


def packed(network: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """``network`` for inference, reading its weights (as they are now) from one variable
    that holds them all, for the serving SavedModel.

    A SavedModel traces a save and a restore op for each variable, and a loader recreates
    each: for a backbone's hundreds of variables that cost most of saving and loading it,
    and for one variable it costs next to nothing. The computation is the network's own
    (``stateless_call``), so it gives the same outputs.
    """
    weights = [*network.trainable_variables, *network.non_trainable_variables]
    if any(w.dtype != "float32" for w in weights):
        return lambda x: network(x, training=False)
    sizes = [math.prod(w.shape) for w in weights]
    padded = [-(-n // _ALIGN) * _ALIGN for n in sizes]
    flat = tf.Variable(
        tf.concat(
            [
                tf.pad(tf.reshape(w.value, [-1]), [[0, p - n]])
                for w, n, p in zip(weights, sizes, padded, strict=True)
            ],
            axis=0,
        ),
        trainable=False,
        name="packed_weights",
    )
    trainable = len(network.trainable_variables)

    # one split into each weight and the padding after it: a slice per weight would add
    # thousands of ops to the graph, each costing time to trace, load and start
    pieces = [part for n, p in zip(sizes, padded, strict=True) for part in (n, p - n)]

    def call(x: tf.Tensor) -> tf.Tensor:
        parts = tf.split(flat, pieces)[::2]
        values = [
            part if len(w.shape) == 1 else tf.reshape(part, w.shape)  # 1-D: already shaped
            for part, w in zip(parts, weights, strict=True)
        ]
        return network.stateless_call(values[:trainable], values[trainable:], x, training=False)[0]

    return call


def batched(
    fn: Callable[[tf.Tensor], tf.Tensor], batch_size: int
) -> Callable[[np.ndarray], np.ndarray]:
    """``fn`` over an array of any length, a batch at a time.

    Batches come from a prefetching ``tf.data`` pipeline, so on a GPU the next batch is
    copied while this one runs.
    """

    def run(x: np.ndarray) -> np.ndarray:
        batches = prefetched(tf.data.Dataset.from_tensor_slices(x).batch(batch_size))
        return np.concatenate([np.asarray(fn(batch)) for batch in batches])

    return run
