"""The network: any ``keras.applications`` backbone, frozen, under the notebook's head.

The saved model takes raw RGB pixels in [0, 255] and applies the backbone's own
``preprocess_input`` inside, so whoever loads it (evaluate, export, serving) cannot get the
scaling wrong.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from components.step import InputError

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.txt"
HISTORY_FILE = "history.json"
TRAINING_FILE = "training.json"
TENSORBOARD_DIR = "logs"


def backbone_class(name: str) -> type:
    cls = getattr(keras.applications, name, None)
    if not callable(cls) or not name[:1].isupper():
        raise InputError(f"backbone {name!r} is not a keras.applications model")
    return cls


@keras.saving.register_keras_serializable(package="shapes")
class Preprocess(keras.layers.Layer):
    """The named backbone's ``preprocess_input``, as a layer so it is saved with the model."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        module = importlib.import_module(backbone_class(backbone).__module__)
        self._preprocess = module.preprocess_input

    def call(self, inputs):
        return self._preprocess(inputs)

    def get_config(self) -> dict:
        return {**super().get_config(), "backbone": self.backbone}


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


def predictor(network: keras.Model, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """``network`` in inference mode over arrays of any length, traced once for all calls.

    Keras' ``predict`` traces again for a short last batch and for every new call, and
    tracing and optimising InceptionResNetV2's graph costs about 9 s here; a signature with
    an open batch size is traced on the first call only. Batches come from a prefetching
    ``tf.data`` pipeline, so on a GPU the next batch is copied while this one runs.
    """
    call = tf.function(
        lambda batch: network(batch, training=False),
        input_signature=[tf.TensorSpec((None, *network.input_shape[1:]), tf.float32)],
    )

    def predict(x: np.ndarray) -> np.ndarray:
        batches = tf.data.Dataset.from_tensor_slices(x).batch(batch_size).prefetch(tf.data.AUTOTUNE)
        return np.concatenate([call(batch).numpy() for batch in batches])

    return predict


def save_serving(network: keras.Model, path: str | Path) -> None:
    """A TensorFlow SavedModel whose ``serving_default`` maps ``images`` (a float32 batch of
    RGB pixels in [0, 255]) to ``probabilities``.

    Only the variables and one traced function are saved, not Keras' object graph: for
    InceptionResNetV2 that saves in about 18 s instead of ``Model.export``'s 44 s here.
    """
    module = tf.Module()
    module.variables_ = list(network.variables)
    spec = tf.TensorSpec((None, *network.input_shape[1:]), tf.float32, name="images")
    module.serve = tf.function(
        lambda images: {"probabilities": network(images, training=False)}, input_signature=[spec]
    )
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def write_labels(folder: str | Path, classes: list[str]) -> None:
    """``labels.txt``: one class name a line, in the order of the model's outputs."""
    Path(folder, LABELS_FILE).write_text("".join(f"{c}\n" for c in classes))


def save(
    model: keras.Model, model_dir: str | Path, classes: list[str], history: dict, facts: dict
) -> None:
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / MODEL_FILE)
    write_labels(model_dir, classes)
    (model_dir / HISTORY_FILE).write_text(json.dumps(history, indent=2))
    (model_dir / TRAINING_FILE).write_text(json.dumps(facts, indent=2))


def load(model_dir: str | Path) -> tuple[keras.Model, list[str]]:
    model_dir = Path(model_dir)
    model = keras.models.load_model(model_dir / MODEL_FILE)
    return model, (model_dir / LABELS_FILE).read_text().splitlines()


def read_json(model_dir: str | Path, name: str) -> dict:
    return json.loads(Path(model_dir, name).read_text())
