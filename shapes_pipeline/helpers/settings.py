"""Every pipeline parameter, written once: its name, type, default, group, help and the
values it may take. The pipeline's signature and docstring (``pipeline.py``), the command
line's options, the checks before a run, a ``--config`` file's schema and the groups a step
receives are made from this table; the README's table and the deploy ConfigMap are tested
against it. Nothing here imports TensorFlow, so ``--help`` and the checks cost little.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from shapes_pipeline.helpers.dataset import MAX_PIXELS
from shapes_pipeline.helpers.facts import MILD_AUGMENTATION, Augmentation
from shapes_pipeline.helpers.shards import DEFAULT_FEATURE_MEMORY_MB, DEFAULT_SHARD_MB

# keras.applications' models (tests/test_parameters.py checks the list against the
# installed Keras) and the smallest image each accepts, where that is more than 32.
BACKBONES = (
    "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtSmall", "ConvNeXtTiny", "ConvNeXtXLarge",
    "DenseNet121", "DenseNet169", "DenseNet201", "EfficientNetB0", "EfficientNetB1",
    "EfficientNetB2", "EfficientNetB3", "EfficientNetB4", "EfficientNetB5",
    "EfficientNetB6", "EfficientNetB7", "EfficientNetV2B0", "EfficientNetV2B1",
    "EfficientNetV2B2", "EfficientNetV2B3", "EfficientNetV2L", "EfficientNetV2M",
    "EfficientNetV2S", "InceptionResNetV2", "InceptionV3", "MobileNet", "MobileNetV2",
    "MobileNetV3Large", "MobileNetV3Small", "NASNetLarge", "NASNetMobile", "ResNet101",
    "ResNet101V2", "ResNet152", "ResNet152V2", "ResNet50", "ResNet50V2", "VGG16", "VGG19",
    "Xception"
)  # fmt: skip
MIN_IMAGE_SIZE = {"InceptionResNetV2": 75, "InceptionV3": 75, "Xception": 71}
SMALLEST_IMAGE = 32
WEIGHTS = ("imagenet", "none", "auto")
DEFAULT_EXTRACT_WORKERS = 2
# The images the steps run in: <repository>-cpu:<tag> and <repository>-gpu:<tag>
# (`make images`); compile's --image-repository and --image-tag, else these variables.
IMAGE_REPOSITORY = os.environ.get("SHAPES_IMAGE_REPOSITORY", "shapes-pipeline")
IMAGE_TAG = os.environ.get("SHAPES_IMAGE_TAG", "0.1.0")
PIPELINE_NAME = "shapes-transfer-learning"
GROUPS = (
    "data", "model", "training", "augmentation", "fine_tuning", "gate", "scale", "export",
)  # fmt: skip


@dataclass(frozen=True)
class Parameter:
    """One pipeline parameter. ``default`` None: it must be given. ``range``: the smallest
    and largest value, inclusive; ``choices``: the only values allowed."""

    name: str
    kind: type
    default: Any
    group: str
    help: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None

    @property
    def option(self) -> str:
        return f"--{self.name.replace('_', '-')}"


# fmt: off
PARAMETERS: tuple[Parameter, ...] = (
    Parameter("data", str, None, "data",
              "The images: a folder (or gs:// prefix, or .zip) with one sub-folder of images per "
              "class. A local run without it uses demo shapes."),
    Parameter("registry", str, None, "export",
              "Where models are published: a folder or gs:// URI holding <model_name>/<version>/ "
              "and <model_name>/LATEST (the production version)."),
    Parameter("backbone", str, "InceptionResNetV2", "model",
              "The keras.applications model to transfer from, e.g. MobileNet, ResNet50, "
              "InceptionResNetV2.", choices=BACKBONES),
    Parameter("weights", str, "imagenet", "model",
              "The backbone's weights: imagenet, none (random), auto (imagenet if it can be "
              "downloaded, else random with a warning), or a local or gs:// weights file of the "
              "backbone without its top."),
    Parameter("image_size", int, 128, "model",
              "Images are resized to this many pixels square.", range=(SMALLEST_IMAGE, 1024)),
    Parameter("epochs", int, 500, "training",
              "The most epochs the head trains; early stopping usually ends sooner.",
              range=(1, 100_000)),
    Parameter("batch_size", int, 32, "training",
              "Images per training step.", range=(1, 4096)),
    Parameter("patience", int, 20, "training",
              "Epochs without a better validation loss before training stops.", range=(0, 100_000)),
    Parameter("seed", int, 230, "data",
              "Seed of the split and of training; the same seed, the same model.",
              range=(0, 2**31 - 1)),
    Parameter("augment", bool, False, "augmentation",
              "Also train on augmented views of the training images."),
    Parameter("augment_views", int, 8, "augmentation",
              "Augmented views per training image (with augment).", range=(1, 100)),
    Parameter("augment_rotation", float, MILD_AUGMENTATION["rotation"], "augmentation",
              "Largest random rotation, in degrees either way (0: none).", range=(0.0, 180.0)),
    Parameter("augment_zoom", float, MILD_AUGMENTATION["zoom"], "augmentation",
              "Largest random zoom in or out, as a fraction (0: none).", range=(0.0, 0.9)),
    Parameter("augment_translation", float, MILD_AUGMENTATION["translation"], "augmentation",
              "Largest random shift, as a fraction of the image size.", range=(0.0, 0.5)),
    Parameter("augment_contrast", float, MILD_AUGMENTATION["contrast"], "augmentation",
              "Largest random contrast change, as a fraction (0: none).", range=(0.0, 1.0)),
    Parameter("augment_flip_horizontal", bool, MILD_AUGMENTATION["flip_horizontal"], "augmentation",
              "Random left-right mirroring; off by default, as a mirrored digit or letter is "
              "another one."),
    Parameter("augment_flip_vertical", bool, MILD_AUGMENTATION["flip_vertical"], "augmentation",
              "Random upside-down flips; only for data that keeps its class upside down (drawings "
              "of shapes: presets/augment-shapes.yaml)."),
    Parameter("fine_tune_layers", int, 0, "fine_tuning",
              "After the head converges, also train the backbone's top this many weight layers "
              "(batch norm stays frozen); 0 is off.", range=(0, 10_000)),
    Parameter("fine_tune_lr", float, 0.0001, "fine_tuning",
              "Fine-tuning's peak learning rate: reached by a linear warm-up over its first "
              "epoch, then decayed to 0 along a cosine.", range=(1e-8, 1.0)),
    Parameter("fine_tune_epochs", int, 20, "fine_tuning",
              "The most epochs of fine-tuning (the schedule's length); early stopping on "
              "validation loss may end it sooner.", range=(1, 10_000)),
    Parameter("train_fraction", float, 0.8, "data",
              "The part of each class for training (validation included); the rest is the test "
              "split.", range=(0.01, 0.99)),
    Parameter("val_fraction", float, 0.1, "data",
              "The part of each class's training images kept for validation (early stopping); 0 "
              "trains all epochs and keeps the last.", range=(0.0, 0.9)),
    Parameter("min_accuracy", float, 0.9, "gate",
              "The least test accuracy a model needs to be published.", range=(0.0, 1.0)),
    Parameter("max_regression", float, 0.0, "gate",
              "How much worse than the production model, on the same test images, a new model may "
              "be and still replace it.", range=(0.0, 1.0)),
    Parameter("allow_class_change", bool, False, "gate",
              "Let a model whose classes differ from the production model's replace it (otherwise "
              "the gate refuses it)."),
    Parameter("max_image_pixels", int, MAX_PIXELS, "data",
              "The largest image accepted, in pixels (width x height); larger ones are refused "
              "before training, naming the file.", range=(1, 1_000_000_000)),
    Parameter("shard_mb", float, DEFAULT_SHARD_MB, "scale",
              "Target size of one TFRecord shard of the data set, in MB.", range=(0.01, 10_000)),
    Parameter("extract_workers", int, DEFAULT_EXTRACT_WORKERS, "scale",
              "Feature extraction tasks (each reads its share of the shards, on its own GPU); "
              "never more than there are shards. A local run defaults to 1: its tasks share one "
              "machine, where each more repeats TensorFlow's start and holds another copy of the "
              "backbone in memory.", range=(1, 100)),
    Parameter("feature_memory_mb", int, DEFAULT_FEATURE_MEMORY_MB, "scale",
              "Training holds the extracted features in memory up to this many MB, and streams "
              "them from their shards above it.", range=(0, 1_000_000)),
    Parameter("backbone_cache", str, "", "scale",
              "A folder or gs:// URI that keeps traced backbones between runs, so a run that "
              "finds its backbone there loads it instead of building and tracing it (scheduled "
              "retraining builds the same one each time); empty is off. Keyed by the backbone, "
              "its weights file's content (or the seed of random weights), image size, precision "
              "and versions; ImageNet weights that Keras downloads are not cached. Entries are "
              "never replaced or removed."),
    Parameter("serving_sample", int, 256, "export",
              "Test images (a stratified sample) scored through the served model's "
              "serving_default from their bytes, which must match evaluation.", range=(1, 100_000)),
    Parameter("gate_sample", int, 5000, "gate",
              "The production model is scored on the test images, or on a stratified sample of "
              "this many when there are more.", range=(1, 10_000_000)),
    Parameter("verify_export", str, "hash", "export",
              "How export proves it publishes the evaluated model: hash (the files' content hash "
              "must be the one evaluate recorded) or reload (also load them in a fresh process "
              "and rescore evaluate's serving sample).", choices=("hash", "reload")),
    Parameter("model_name", str, "shapes-classifier", "export",
              "The model's name in the registry (from the command line: the data folder's name "
              "unless given; the demo data's: this default)."),
)
# fmt: on

BY_NAME = {p.name: p for p in PARAMETERS}


def defaults() -> dict[str, Any]:
    """Every parameter's default (None where it has none: it must be given)."""
    return {p.name: p.default for p in PARAMETERS}


def group(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """The parameters of group ``name`` out of ``values`` (every parameter by name)."""
    return {p.name: values[p.name] for p in PARAMETERS if p.group == name}


class Settings:
    """A group of parameters as one typed object a step receives: its fields are the
    group's parameters, by name (tests/test_settings.py holds them to the table)."""

    GROUP: ClassVar[str]

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Self:
        """The group's values out of ``values`` (any mapping that holds them by name)."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class TrainingSettings(Settings):
    GROUP = "training"
    epochs: int
    batch_size: int
    patience: int


@dataclass(frozen=True)
class AugmentSettings(Settings):
    GROUP = "augmentation"
    augment: bool
    augment_views: int
    augment_rotation: float
    augment_zoom: float
    augment_translation: float
    augment_contrast: float
    augment_flip_horizontal: bool
    augment_flip_vertical: bool

    def transforms(self) -> Augmentation:
        """The random transforms, as the model's augmenter takes them."""
        return Augmentation(
            rotation=self.augment_rotation, zoom=self.augment_zoom,
            translation=self.augment_translation, contrast=self.augment_contrast,
            flip_horizontal=self.augment_flip_horizontal,
            flip_vertical=self.augment_flip_vertical,
        )  # fmt: skip


@dataclass(frozen=True)
class FineTuneSettings(Settings):
    GROUP = "fine_tuning"
    fine_tune_layers: int
    fine_tune_lr: float
    fine_tune_epochs: int


@dataclass(frozen=True)
class GateSettings(Settings):
    GROUP = "gate"
    min_accuracy: float
    max_regression: float
    allow_class_change: bool
    gate_sample: int


@dataclass(frozen=True)
class ScaleSettings(Settings):
    GROUP = "scale"
    shard_mb: float
    extract_workers: int
    feature_memory_mb: int
    backbone_cache: str


# extract and train without augmentation (their callers outside the pipeline)
NO_AUGMENTATION = AugmentSettings.of({**defaults(), "augment": False})
GROUP_SETTINGS = (TrainingSettings, AugmentSettings, FineTuneSettings, GateSettings, ScaleSettings)
