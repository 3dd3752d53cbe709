"""Step 2: transfer training with a frozen backbone and the notebook's head.

The frozen backbone gives the same features for an image in every epoch, so it runs once
over train and validation images and the head trains on the cached features; the result is
the same model the notebook's way would give, without recomputing the backbone every epoch.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from components import artifact, dataset, model, storage
from components.facts import TrainingFacts
from components.fit import TensorBoardWriter, fit
from components.step import InputError, package_versions

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
    if precision == "auto":
        gpu = bool(tf.config.list_physical_devices("GPU"))
        precision = "mixed_float16" if gpu else "float32"
    keras.mixed_precision.set_global_policy(precision)
    log.warning("devices: %s; precision: %s", found, keras.mixed_precision.global_policy().name)
    return found


def augmented_views(x: np.ndarray, views: int, seed: int) -> np.ndarray:
    """``views`` randomly rotated, flipped, zoomed and shifted copies of every image.

    Drawings of shapes keep their class under any rotation or flip, so the ranges are wide;
    the background is extended from the edge rather than filled with black.
    """
    augment = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
            keras.layers.RandomRotation(0.5, fill_mode="nearest", seed=seed),
            keras.layers.RandomZoom(0.15, fill_mode="nearest", seed=seed),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed),
        ]
    )
    return np.concatenate([np.asarray(augment(x, training=True)) for _ in range(views)])


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


def train(
    dataset_dir: str,
    model_dir: str,
    *,
    backbone: str,
    weights: str,
    image_size: int,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    augment: bool = False,
    augment_views: int = 8,
    fine_tune_layers: int = 0,
    fine_tune_lr: float = 1e-5,
    precision: str = "auto",
) -> TrainingFacts:
    """Trains the head on cached features, optionally fine-tunes, saves the full model.

    Returns the facts the report and summary show.
    """
    started = time.perf_counter()
    found = devices(precision)
    keras.utils.set_random_seed(seed)
    classes = dataset.class_names(dataset.read_manifest(dataset_dir))
    base, weights_used, warnings = build_backbone(backbone, weights, image_size)
    base.trainable = False
    features = model.feature_extractor(base, backbone, image_size)
    images = {
        s: dataset.load_split(dataset_dir, s, image_size, classes)[:2] for s in ("train", "val")
    }
    if augment:
        x, y = images["train"]
        images["train"] = (augmented_views(x, augment_views, seed), np.tile(y, augment_views))
        caching = (
            f"features of {augment_views} augmented views of each training image, computed once"
        )
    else:
        caching = "features of each image, computed once"
    build_seconds = time.perf_counter() - started

    clock = time.perf_counter()
    extract = model.compiled(lambda x: features(x, training=False), image_size)
    cached = {
        s: (model.batched(extract, batch_size)(x), y) for s, (x, y) in images.items() if len(y)
    }
    feature_seconds = time.perf_counter() - clock

    head = model.head(features.output_shape[-1], len(classes), seed=seed)
    tensorboard = TensorBoardWriter(Path(model_dir, artifact.TENSORBOARD_DIR))
    settings = {
        "epochs": epochs,
        "batch_size": batch_size,
        "patience": patience,
        "seed": seed,
        "on_epoch": tensorboard,
    }
    validated = "val" in cached  # val_fraction 0: no early stopping, the last epoch is kept
    clock = time.perf_counter()
    history = fit(head, cached["train"], cached["val"] if validated else None, **settings)
    head_seconds = time.perf_counter() - clock
    head_epochs = len(history["loss"])

    tuned = {}
    if fine_tune_layers:
        classifier = model.classifier(features, head)
        head_only = classifier.get_weights()
        unfrozen = unfreeze_top(base, fine_tune_layers)
        clock = time.perf_counter()
        stage = fit(
            classifier,
            images["train"],
            images["val"] if validated else None,
            learning_rate=fine_tune_lr,
            **settings,
        )
        # kept only if validation got better; with no validation, the last weights are kept
        kept = not validated or min(stage["val_loss"]) < min(history["val_loss"])
        if not kept:
            classifier.set_weights(head_only)
        tuned = {
            "fine_tune_layers": unfrozen,
            "fine_tune_epochs": len(stage["loss"]),
            "fine_tune_kept": kept,
            "fine_tune_seconds": round(time.perf_counter() - clock, 2),
        }
        history = {k: history[k] + stage[k] for k in history}
        base.trainable = False
    training_seconds = time.perf_counter() - started

    facts: TrainingFacts = {
        "backbone": backbone,
        "weights": weights_used,
        "image_size": image_size,
        "classes": classes,
        "devices": found,
        "precision": keras.mixed_precision.global_policy().name,
        "caching": caching,
        "augment": augment,
        "early_stopping": validated,
        "epoch_limit": epochs,
        "epochs_run": len(history["loss"]),
        "head_epochs": head_epochs,
        "best_epoch": (
            int(np.argmin(history["val_loss"])) + 1 if validated else len(history["loss"])
        ),
        "best_val_loss": min(history["val_loss"]) if validated else None,
        "build_seconds": round(build_seconds, 2),
        "feature_seconds": round(feature_seconds, 2),
        "head_seconds": round(head_seconds, 2),
        **tuned,
        "training_seconds": round(training_seconds, 2),
        "warnings": warnings,
        # tensorflow's distribution name differs by image (tensorflow-cpu, tensorflow):
        "packages": {
            **package_versions("keras", "numpy", "shapes-pipeline"),
            "tensorflow": tf.__version__,
        },
    }
    clock = time.perf_counter()
    # The serving function calls the traced feature extractor: no second trace of the backbone.
    classify = model.compiled(lambda x: head(extract(x), training=False), image_size)
    tensorboard.close()
    model.save(model_dir, classify, classes, history, facts)
    facts["save_seconds"] = round(time.perf_counter() - clock, 2)
    return facts
