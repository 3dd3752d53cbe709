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

from components import dataset, model, storage
from components.fit import fit, write_tensorboard
from components.step import InputError

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
) -> dict:
    """Trains the head on cached features and saves the full model; returns the facts."""
    keras.utils.set_random_seed(seed)
    examples = dataset.read_manifest(dataset_dir)
    classes = dataset.class_names(examples)
    base, weights_used, warnings = build_backbone(backbone, weights, image_size)
    base.trainable = False
    features = model.feature_extractor(base, backbone, image_size)

    started = time.perf_counter()
    extract = model.predictor(features, batch_size)
    cached = {}
    for split in ("train", "val"):
        x, y, _ = dataset.load_split(dataset_dir, split, image_size, classes)
        cached[split] = (extract(x), y)
    feature_seconds = time.perf_counter() - started

    head = model.head(features.output_shape[-1], len(classes), seed=seed)
    started = time.perf_counter()
    history = fit(
        head,
        cached["train"],
        cached["val"],
        epochs=epochs,
        batch_size=batch_size,
        patience=patience,
        seed=seed,
    )
    head_seconds = time.perf_counter() - started
    facts = {
        "backbone": backbone,
        "weights": weights_used,
        "image_size": image_size,
        "classes": classes,
        "epochs_run": len(history["loss"]),
        "best_epoch": int(np.argmin(history["val_loss"])) + 1,
        "feature_seconds": round(feature_seconds, 2),
        "head_seconds": round(head_seconds, 2),
        "warnings": warnings,
    }
    model.save(model.classifier(features, head), model_dir, classes, history, facts)
    write_tensorboard(history, Path(model_dir, model.TENSORBOARD_DIR))
    return facts
