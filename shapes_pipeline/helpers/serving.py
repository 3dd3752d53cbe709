"""The serving SavedModel: its signatures, writing it (whole, or a template completed with
the trained head), and opening it as its clients do.

Train writes it, evaluate scores and export publishes the very same files; TF Serving and
KServe serve it as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from shapes_pipeline.helpers import artifact
from shapes_pipeline.helpers.images import decode
from shapes_pipeline.helpers.model import TracedFunction, batched, compiled
from shapes_pipeline.helpers.step import InputError


def serving_signatures(
    classify: TracedFunction, classes: list[str], head_model: keras.Model
) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """The functions a SavedModel serves, traced; ``save`` writes them with the values their
    variables hold then.

    ``serving_default``: ``image_bytes``, a batch of encoded images of any size, so clients
    send files as they are; ``predict_images``: ``images``, a float32 batch of RGB pixels in
    [0, 255] at the model's size; ``predict_features``: ``features``, the backbone's pooled
    features (what extract writes), through the head alone, which is how evaluation scores
    a large test split. All return ``probabilities`` and ``class`` (the label).
    """
    spec = classify.input_signature[0]
    size = spec.shape[1]
    labels = tf.constant(classes)

    def named(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "probabilities": probabilities,
            "class": tf.gather(labels, tf.argmax(probabilities, axis=1)),
        }

    def outputs(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return named(classify(images))

    def from_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.TensorSpec((size, size, 3), tf.float32)
        decoded = tf.map_fn(lambda b: decode(b, size), image_bytes, fn_output_signature=pixels)
        return outputs(decoded)

    def from_features(features: tf.Tensor) -> dict[str, tf.Tensor]:
        return named(head_model(features, training=False))

    n_features = head_model.input_shape[-1]
    return {
        "serving_default": tf.function(from_bytes).get_concrete_function(
            tf.TensorSpec((None,), tf.string, name="image_bytes")
        ),
        "predict_images": tf.function(outputs).get_concrete_function(spec),
        "predict_features": tf.function(from_features).get_concrete_function(
            tf.TensorSpec((None, n_features), tf.float32, name="features")
        ),
    }


def signatures_of(
    features_fn: TracedFunction, head_model: keras.Model, classes: list[str]
) -> dict[str, tf.types.experimental.ConcreteFunction]:
    """:func:`serving_signatures` of ``head_model`` over the traced feature extractor."""
    size = features_fn.input_signature[0].shape[1]
    classify = compiled(lambda x: head_model(features_fn(x), training=False), size)
    return serving_signatures(classify, classes, head_model)


def write_saved_model(
    path: str | Path,
    signatures: dict[str, tf.types.experimental.ConcreteFunction],
    head_model: keras.Model,
) -> None:
    """The serving SavedModel of ``signatures``, with the values their variables hold now.

    Only the variables the functions read and their traced graphs are saved, not Keras'
    object graph, which is several times slower to save. The head's weights are saved as
    the root's ``head`` list, in ``head_model.weights`` order, so that
    :func:`save_with_head` can find them in the loaded template.
    """
    module = tf.Module()
    module.head = [w.value for w in head_model.weights]
    ours = {id(v) for v in module.head}
    module.backbone = [v for v in signatures["predict_images"].variables if id(v) not in ours]
    tf.saved_model.save(module, str(path), signatures=signatures)


def save(
    model_dir: str | Path,
    signatures: dict[str, tf.types.experimental.ConcreteFunction],
    head_model: keras.Model,
    classes: list[str],
    history: dict,
    facts: dict,
) -> None:
    """The model artifact: the serving SavedModel (TF Serving or KServe serve it as it is)
    that evaluate scores and export publishes, with its labels, history and facts."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    write_saved_model(model_dir / artifact.SAVED_MODEL_DIR, signatures, head_model)
    _write_facts(model_dir, classes, history, facts)


def save_with_head(
    template: str | Path,
    model_dir: str | Path,
    head_weights: list[np.ndarray],
    classes: list[str],
    history: dict,
    facts: dict,
) -> None:
    """The model artifact :func:`save` would write, from ``template`` (a SavedModel of the
    same network that :func:`write_saved_model` wrote with an untrained head) and the
    trained head's weights; the network is neither built nor traced again.

    The template is loaded, its head's variables are given the trained weights, and it is
    saved again with its own signatures.
    """
    loaded = tf.saved_model.load(str(template))
    found = [list(v.shape) for v in loaded.head]
    if found != [list(w.shape) for w in head_weights]:
        raise InputError(
            f"{template}: its head's weights ({found}) are not the "
            f"trained head's ({[list(w.shape) for w in head_weights]})"
        )
    for variable, weight in zip(loaded.head, head_weights, strict=True):
        variable.assign(weight.astype(variable.dtype.as_numpy_dtype))
    out = Path(model_dir, artifact.SAVED_MODEL_DIR)
    tf.saved_model.save(loaded, str(out), signatures=dict(loaded.signatures))
    _write_facts(model_dir, classes, history, facts)


def _write_facts(model_dir: Path | str, classes: list[str], history: dict, facts: dict) -> None:
    artifact.write_labels(model_dir, classes)
    Path(model_dir, artifact.HISTORY_FILE).write_text(json.dumps(history, indent=2))
    Path(model_dir, artifact.TRAINING_FILE).write_text(json.dumps(facts, indent=2))


@dataclass
class Served:
    """A saved model as its clients use it: ``predict`` takes encoded images (bytes, or
    files to read) through ``serving_default``; ``predict_features`` takes extracted
    features through the head (None for a model saved before it had that signature)."""

    classes: list[str]
    predict: Callable[[list[bytes | Path]], np.ndarray]
    predict_features: Callable[[np.ndarray], np.ndarray] | None


def open_served(model_dir: str | Path, batch_size: int = 32) -> Served:
    model_dir = Path(model_dir)
    saved_model = model_dir / artifact.SAVED_MODEL_DIR
    if not (saved_model / "saved_model.pb").is_file():
        raise InputError(
            f"{model_dir}: no SavedModel at {artifact.SAVED_MODEL_DIR}/ (an older layout)"
        )
    served = tf.saved_model.load(str(saved_model))
    serve = served.signatures["serving_default"]
    inputs = sorted(serve.structured_input_signature[1])
    if inputs != ["image_bytes"]:
        raise InputError(
            f"{model_dir}: its serving_default takes {inputs}, not image_bytes "
            "(a model exported before serving took encoded images)"
        )

    def probabilities(image_bytes: tf.Tensor) -> tf.Tensor:
        _ = served  # the signature needs the loaded object (its variables) alive
        return serve(image_bytes=image_bytes)["probabilities"]

    def predict(items: list[bytes | Path]) -> np.ndarray:
        encoded = [x if isinstance(x, bytes) else Path(x).read_bytes() for x in items]
        return batched(probabilities, batch_size)(np.array(encoded, dtype=object))

    head_signature = served.signatures.get("predict_features")

    def predict_features(features: np.ndarray) -> np.ndarray:
        _ = served
        x = tf.constant(features, tf.float32)
        return np.asarray(head_signature(features=x)["probabilities"])

    return Served(
        artifact.read_labels(model_dir), predict, predict_features if head_signature else None
    )


def load(
    model_dir: str | Path, batch_size: int = 32
) -> tuple[Callable[[list[bytes | Path]], np.ndarray], list[str]]:
    """A saved model's encoded images -> probabilities function (through
    ``serving_default``, as a client of the served model would call it) and its classes."""
    served = open_served(model_dir, batch_size)
    return served.predict, served.classes
