"""The frozen backbone every GPU step builds: which weights, which devices and precision,
the augmentations, and the top layers fine-tuning may unfreeze."""

from __future__ import annotations

import logging
import tempfile

import keras
import tensorflow as tf

from shapes_pipeline.helpers import model, storage
from shapes_pipeline.helpers.facts import MILD_AUGMENTATION, Augmentation
from shapes_pipeline.helpers.step import InputError

log = logging.getLogger(__name__)


class WeightsError(InputError):
    """Backbone weights that cannot be had; the message names them."""


def build_backbone(name: str, weights: str, image_size: int) -> tuple[keras.Model, str, list[str]]:
    """The backbone without its top, the weights actually used, and warnings for the report.

    ``weights``: ``imagenet`` (Keras' download), ``none``, ``auto`` (imagenet if it can be
    had, else random init with a warning), or a local or ``gs://`` weights file.
    """
    cls = model.backbone_class(name)
    shape = (image_size, image_size, 3)

    def make(w: str | None) -> keras.Model:
        try:
            return cls(include_top=False, weights=w, input_shape=shape)
        except ValueError as e:  # Keras' way of saying the size or the weights do not fit
            raise InputError(f"backbone {name} at image_size {image_size}: {e}") from e

    if weights == "none":
        return make(None), "none", []
    if weights in ("imagenet", "auto"):
        try:
            return make("imagenet"), "imagenet", []
        except Exception as e:  # Keras raises plain Exceptions for a failed download
            if weights == "imagenet":
                raise WeightsError(
                    f"weights=imagenet: cannot load ImageNet weights for {name} ({e})"
                ) from e
            warning = (
                f"ImageNet weights for {name} could not be loaded ({type(e).__name__}: {e}); "
                "the backbone is RANDOMLY INITIALISED and accuracy will be poor. Pass --weights "
                "with a weights file to fix this."
            )
            log.warning(warning)
            return make(None), "none", [warning]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = storage.copy_to_local(weights, f"{tmp}/backbone.weights.h5")
            storage.check_exists(local)
            return make(local), weights, []
        except (InputError, OSError) as e:
            raise WeightsError(f"{weights}: cannot load these weights into {name} ({e})") from e


def devices(precision: str = "auto") -> list[str]:
    """Logs the devices TensorFlow found and sets the precision policy.

    ``auto`` is mixed precision on a GPU: float16 compute with float32 weights (and a
    float32 output layer, see ``model.head``) roughly doubles throughput there; on a CPU it
    would only slow things down, so ``auto`` is float32 there.
    """
    found = [d.name for d in tf.config.list_physical_devices()]
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if precision == "auto":
        precision = "mixed_float16" if gpu else "float32"
    keras.mixed_precision.set_global_policy(precision)
    log.warning("devices: %s; precision: %s", found, keras.mixed_precision.global_policy().name)
    return found


def augmenter(seed: int, settings: Augmentation = MILD_AUGMENTATION) -> keras.Sequential:
    """The ``settings``' random flips, rotations, zooms, shifts and contrast changes (those
    that are not off), applied a batch at a time (``training=True``).

    The background is extended from the edge rather than filled with black. The layers'
    random state advances with each call: one augmenter per shard, called in the shard's
    order, gives the same views however the shards are grouped.
    """
    flips = {
        (True, True): "horizontal_and_vertical",
        (True, False): "horizontal",
        (False, True): "vertical",
    }.get((settings["flip_horizontal"], settings["flip_vertical"]))
    edge = {"fill_mode": "nearest", "seed": seed}
    layers = [
        flips and keras.layers.RandomFlip(flips, seed=seed),
        settings["rotation"] and keras.layers.RandomRotation(settings["rotation"] / 360, **edge),
        settings["zoom"] and keras.layers.RandomZoom(settings["zoom"], **edge),
        settings["translation"]
        and keras.layers.RandomTranslation(
            settings["translation"], settings["translation"], **edge
        ),
        settings["contrast"] and keras.layers.RandomContrast(settings["contrast"], seed=seed),
    ]
    return keras.Sequential([layer for layer in layers if layer])


def augment(augmenter_model: keras.Sequential, images: tf.Tensor) -> tf.Tensor:
    """A batch of pixels through ``augmenter_model``'s random transforms, as float32 (the
    extractor's input, under mixed precision too, where the layers compute in float16);
    with every transform off (an augmenter without layers, which Keras cannot call), the
    pixels as they are."""
    if not augmenter_model.layers:
        return images
    return tf.cast(augmenter_model(images, training=True), tf.float32)


def unfreeze_top(backbone: keras.Model, layers: int) -> int:
    """Makes the top ``layers`` weight-carrying layers trainable, batch norm excepted.

    Batch-norm layers stay frozen (and the backbone is called with ``training=False``), so
    their statistics keep the values the backbone was trained with.
    """
    candidates = [
        layer
        for layer in backbone.layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    backbone.trainable = True
    chosen = set(map(id, candidates[-layers:])) if layers else set()
    for layer in backbone.layers:
        layer.trainable = id(layer) in chosen
    return len(chosen)


def strategy() -> tf.distribute.Strategy:
    """``MirroredStrategy`` over every visible GPU when there are several (each step's batch
    is split between them and gradients are summed), else TensorFlow's default strategy:
    the same code runs on one device or many."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    return tf.distribute.get_strategy()
