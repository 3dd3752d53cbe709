"""Step 3: train the notebook's head on the extracted features, optionally fine-tune.

The frozen backbone gives the same features for an image in every epoch, so extract ran it
once and the head trains on its feature shards; the result is the same model the
notebook's way would give, without recomputing the backbone every epoch. Nor is the
backbone built here: extract wrote the serving model, whose head gets the trained weights;
only fine-tuning builds it, to train its top. Features are held in memory while they fit
``feature_memory_mb``, and streamed from their shards above it. Fine-tuning needs pixels:
it streams the image shards, decoded on every core."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from shapes_pipeline.helpers import artifact, dataset, model, serving, shards
from shapes_pipeline.helpers import backbone as nets
from shapes_pipeline.helpers.facts import MILD_AUGMENTATION, Augmentation, TrainingFacts
from shapes_pipeline.helpers.fit import TensorBoardWriter, fit
from shapes_pipeline.helpers.step import lap, package_versions


def _features(feature_dirs: list[str], dataset_dir: str, expected: dict) -> tuple[dict, dict]:
    """The feature index and each split's feature shards, checked against this training."""
    found = {}
    for split in ("train", "val"):
        index, found[split] = shards.feature_shards(feature_dirs, split, dataset_dir)
    for key, value in expected.items():
        if index[key] != value:
            raise dataset.DataError(
                f"{feature_dirs[0]}: features extracted with {key} {index[key]}, "
                f"but training was given {value}"
            )
    return index, found


def fine_tune_schedule(
    peak: float, steps_per_epoch: int, epochs: int
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Fine-tuning's learning rate, as practitioners set it for a pretrained backbone: a
    linear warm-up from 0 to ``peak`` over the first epoch (so the first large gradients
    of the freshly unfrozen layers do not wreck them), then cosine decay to 0 by the last."""
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        warmup_target=peak,
        warmup_steps=steps_per_epoch,
        decay_steps=max(1, steps_per_epoch * (epochs - 1)),
    )


def train(
    dataset_dir: str,
    feature_dirs: list[str],
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
    augmentation: Augmentation = MILD_AUGMENTATION,
    fine_tune_layers: int = 0,
    fine_tune_lr: float = 1e-4,
    fine_tune_epochs: int = 20,
    feature_memory_mb: float = shards.DEFAULT_FEATURE_MEMORY_MB,
    precision: str = "auto",
) -> TrainingFacts:
    """Trains the head on the features of ``feature_dirs`` (every extract task's output),
    optionally fine-tunes, saves the full image -> probabilities model: from the serving
    model extract wrote, with the trained head, when only the head trained.

    Returns the facts the report and summary show.
    """
    lap("import")
    started = time.perf_counter()
    found = nets.devices(precision)
    strategy = nets.strategy()
    keras.utils.set_random_seed(seed)  # as extract: the same random backbone (weights=none)
    manifest = dataset.read_manifest(dataset_dir)
    classes = dataset.class_names(manifest)
    index, feature_files = _features(
        feature_dirs, dataset_dir, {"backbone": backbone, "image_size": image_size}
    )
    weights_used, warnings = index["weights"], index["warnings"]
    if fine_tune_layers:  # fine-tuning changes the backbone: built here, and saved anew
        with strategy.scope():
            base, weights_used, warnings = nets.build_backbone(backbone, weights, image_size)
            base.trainable = False
            features = model.feature_extractor(base, backbone, image_size)
        if weights_used != index["weights"]:
            raise dataset.DataError(
                f"{feature_dirs[0]}: features extracted with weights {index['weights']}, "
                f"but training loaded {weights_used}; extract and train must use the same "
                "backbone"
            )
    keras.utils.set_random_seed(seed)  # the same head whether the backbone was built or not
    with strategy.scope():
        head = model.head(index["dim"], len(classes), seed=seed)
    build_seconds = time.perf_counter() - started
    lap("build")

    clock = time.perf_counter()
    feature_mb = sum(s["bytes"] for f in feature_files.values() for _, s in f) / 1e6
    in_memory = feature_mb <= feature_memory_mb
    data = {
        split: (
            shards.load_features(files, index["dim"])[:2]
            if in_memory
            else shards.stream_features(files, index["dim"], batch_size, seed, split == "train")
        )
        for split, files in feature_files.items()
        if files
    }
    views = index["augment_views"]
    augmented = f" and of {views} augmented views of each training image" if views else ""
    held = "held in memory" if in_memory else "streamed from shards"
    loaded = index.get("backbone_cache") == "loaded"
    cached = "; the backbone loaded from the backbone cache" if loaded else ""
    caching = (
        f"features of each image{augmented}, extracted once by {index['groups']} task(s); "
        f"{feature_mb:.1f} MB {held}{cached}"
    )
    feature_seconds = time.perf_counter() - clock

    tensorboard = TensorBoardWriter(Path(model_dir, artifact.TENSORBOARD_DIR))
    settings = {
        "epochs": epochs,
        "batch_size": batch_size,
        "patience": patience,
        "seed": seed,
        "on_epoch": tensorboard,
        "strategy": strategy,
    }
    validated = "val" in data  # val_fraction 0: no early stopping, the last epoch is kept
    clock = time.perf_counter()
    history = fit(head, data["train"], data["val"] if validated else None, **settings)
    head_seconds = time.perf_counter() - clock
    head_epochs = len(history["loss"])

    tuned = {}
    if fine_tune_layers:
        with strategy.scope():
            classifier = model.classifier(features, head)
        head_only = classifier.get_weights()
        unfrozen = nets.unfreeze_top(base, fine_tune_layers)
        images = {
            split: shards.stream_images(
                dataset_dir, split, image_size, batch_size, seed, shuffle=split == "train"
            )
            for split in data
        }
        if augment:
            augment_fn = nets.augmenter(seed, augmentation)
            images["train"] = images["train"].map(lambda x, y: (nets.augment(augment_fn, x), y))
        clock = time.perf_counter()
        n_train = sum(e.split == "train" for e in manifest)
        stage = fit(
            classifier,
            images["train"],
            images["val"] if validated else None,
            learning_rate=fine_tune_schedule(
                fine_tune_lr, math.ceil(n_train / batch_size), fine_tune_epochs
            ),
            **{**settings, "epochs": fine_tune_epochs},
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
        "replicas": strategy.num_replicas_in_sync,
        "precision": keras.mixed_precision.global_policy().name,
        "caching": caching,
        "features_in_memory": in_memory,
        "augment": augment,
        "augmentation": augmentation if augment else None,
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
    lap("work")
    if fine_tune_layers:
        traced = model.compiled(model.packed(features), image_size)
        signatures = serving.signatures_of(traced, head, classes)
        lap("trace")
        tensorboard.close()
        serving.save(model_dir, signatures, head, classes, history, facts)
    else:  # the backbone is extract's: its serving model gets the trained head
        tensorboard.close()
        template = shards.serving_template(feature_dirs)
        serving.save_with_head(template, model_dir, head.get_weights(), classes, history, facts)
    lap("save")
    facts["save_seconds"] = round(time.perf_counter() - clock, 2)
    return facts
