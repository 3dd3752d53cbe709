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
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from shapes_pipeline.helpers import artifact, dataset, model, serving, shards
from shapes_pipeline.helpers import backbone as nets
from shapes_pipeline.helpers.facts import TrainingFacts
from shapes_pipeline.helpers.fit import TensorBoardWriter, fit
from shapes_pipeline.helpers.settings import AugmentSettings, FineTuneSettings, TrainingSettings
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


@dataclass
class Backbone:
    """What fine-tuning trains on top of the head: the backbone and its feature extractor
    (None when only the head trains), and the weights the backbone was built with."""

    weights: str
    warnings: list[str]
    image_size: int
    base: keras.Model | None = None
    features: keras.Model | None = None


def train(
    dataset_dir: str,
    feature_dirs: list[str],
    model_dir: str,
    *,
    backbone: str,
    weights: str,
    image_size: int,
    seed: int,
    training: TrainingSettings,
    augment: AugmentSettings,
    fine_tuning: FineTuneSettings,
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
    classes = dataset.class_names(dataset.read_manifest(dataset_dir))
    index, feature_files = _features(
        feature_dirs, dataset_dir, {"backbone": backbone, "image_size": image_size}
    )
    built = Backbone(index["weights"], index["warnings"], image_size)
    if fine_tuning.fine_tune_layers:  # fine-tuning changes the backbone: built here
        built = _backbone(strategy, backbone, weights, image_size, index, feature_dirs[0])
    keras.utils.set_random_seed(seed)  # the same head whether the backbone was built or not
    with strategy.scope():
        head = model.head(index["dim"], len(classes), seed=seed)
    seconds = {"build": time.perf_counter() - started}
    lap("build")
    clock = time.perf_counter()
    data, in_memory, caching = _feature_data(
        index, feature_files, training.batch_size, seed, feature_memory_mb
    )
    seconds["feature"], clock = time.perf_counter() - clock, time.perf_counter()
    tensorboard = TensorBoardWriter(Path(model_dir, artifact.TENSORBOARD_DIR))
    settings = {**vars(training), "seed": seed, "on_epoch": tensorboard, "strategy": strategy}
    # val_fraction 0: no validation data, no early stopping, the last epoch is kept
    history = fit(head, data["train"], data.get("val"), **settings)
    seconds["head"] = time.perf_counter() - clock
    head_epochs = len(history["loss"])
    tuned = {}
    if fine_tuning.fine_tune_layers:
        history, tuned = _fine_tune(
            built, head, history, dataset_dir, list(data), seed, augment, fine_tuning, settings
        )
    seconds["training"] = time.perf_counter() - started
    facts = _facts(
        backbone, image_size, classes, found, strategy, built, history, head_epochs,
        training, augment, seconds, tuned, caching=caching, in_memory=in_memory,
    )  # fmt: skip
    _save(model_dir, feature_dirs, built, head, image_size, classes, history, facts, tensorboard)
    return facts


def _backbone(
    strategy: tf.distribute.Strategy, name: str, weights: str, image_size: int, index: dict,
    shown: str,
) -> Backbone:  # fmt: skip
    """The backbone built again for fine-tuning, frozen until its top is unfrozen; it must
    have the weights the features were extracted with."""
    with strategy.scope():
        base, used, warnings = nets.build_backbone(name, weights, image_size)
        base.trainable = False
        features = model.feature_extractor(base, name, image_size)
    if used != index["weights"]:
        raise dataset.DataError(
            f"{shown}: features extracted with weights {index['weights']}, but training "
            f"loaded {used}; extract and train must use the same backbone"
        )
    return Backbone(used, warnings, image_size, base, features)


def _feature_data(
    index: dict, feature_files: dict, batch_size: int, seed: int, feature_memory_mb: float
) -> tuple[dict, bool, str]:
    """Each split's features, held in memory within ``feature_memory_mb`` or streamed from
    their shards; whether they are held; and the line the report shows about them."""
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
    return data, in_memory, caching


def _fine_tune(
    built: Backbone, head: keras.Model, history: dict, dataset_dir: str, splits: list[str],
    seed: int, augment: AugmentSettings, fine_tuning: FineTuneSettings, settings: dict,
) -> tuple[dict, dict]:  # fmt: skip
    """Trains the backbone's top with the head on the image shards; the result is kept
    only if validation got better (with no validation, the last weights are kept). The
    history of both stages, and the facts of this one."""
    strategy, batch_size = settings["strategy"], settings["batch_size"]
    with strategy.scope():
        classifier = model.classifier(built.features, head)
    head_only = classifier.get_weights()
    unfrozen = nets.unfreeze_top(built.base, fine_tuning.fine_tune_layers)
    images = {
        split: shards.stream_images(
            dataset_dir, split, built.image_size, batch_size, seed, shuffle=split == "train"
        )
        for split in splits
    }
    if augment.augment:
        augment_fn = nets.augmenter(seed, augment.transforms())
        images["train"] = images["train"].map(lambda x, y: (nets.augment(augment_fn, x), y))
    clock = time.perf_counter()
    n_train = sum(e.split == "train" for e in dataset.read_manifest(dataset_dir))
    validated = "val" in images
    stage = fit(
        classifier,
        images["train"],
        images["val"] if validated else None,
        learning_rate=fine_tune_schedule(
            fine_tuning.fine_tune_lr, math.ceil(n_train / batch_size), fine_tuning.fine_tune_epochs
        ),
        **{**settings, "epochs": fine_tuning.fine_tune_epochs},
    )
    kept = not validated or min(stage["val_loss"]) < min(history["val_loss"])
    if not kept:
        classifier.set_weights(head_only)
    built.base.trainable = False
    tuned = {
        "fine_tune_layers": unfrozen,
        "fine_tune_epochs": len(stage["loss"]),
        "fine_tune_kept": kept,
        "fine_tune_seconds": round(time.perf_counter() - clock, 2),
    }
    return {k: history[k] + stage[k] for k in history}, tuned


def _facts(
    backbone: str, image_size: int, classes: list[str], found: list[str],
    strategy: tf.distribute.Strategy, built: Backbone, history: dict, head_epochs: int,
    training: TrainingSettings, augment: AugmentSettings, seconds: dict, tuned: dict, *,
    caching: str, in_memory: bool,
) -> TrainingFacts:  # fmt: skip
    """What training did, as the report, the summary and the registry show it."""
    validated = "val_loss" in history
    return {
        "backbone": backbone,
        "weights": built.weights,
        "image_size": image_size,
        "classes": classes,
        "devices": found,
        "replicas": strategy.num_replicas_in_sync,
        "precision": keras.mixed_precision.global_policy().name,
        "caching": caching,
        "features_in_memory": in_memory,
        "augment": augment.augment,
        "augmentation": augment.transforms() if augment.augment else None,
        "early_stopping": validated,
        "epoch_limit": training.epochs,
        "epochs_run": len(history["loss"]),
        "head_epochs": head_epochs,
        "best_epoch": (
            int(np.argmin(history["val_loss"])) + 1 if validated else len(history["loss"])
        ),
        "best_val_loss": min(history["val_loss"]) if validated else None,
        **{f"{k}_seconds": round(v, 2) for k, v in seconds.items() if k != "training"},
        **tuned,
        "training_seconds": round(seconds["training"], 2),
        "warnings": built.warnings,
        # tensorflow's distribution name differs by image (tensorflow-cpu, tensorflow):
        "packages": {
            **package_versions("keras", "numpy", "shapes-pipeline"),
            "tensorflow": tf.__version__,
        },
    }


def _save(
    model_dir: str, feature_dirs: list[str], built: Backbone, head: keras.Model,
    image_size: int, classes: list[str], history: dict, facts: TrainingFacts,
    tensorboard: TensorBoardWriter,
) -> None:  # fmt: skip
    """The model artifact: traced anew when fine-tuning changed the backbone, else extract's
    serving model with the trained head."""
    clock = time.perf_counter()
    lap("work")
    if built.base is not None:
        traced = model.compiled(model.packed(built.features), image_size)
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
