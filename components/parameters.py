"""The pipeline's parameters: their defaults and help (both from the pipeline function, as
KFP reads them: its signature and its docstring's ``Args:``) and every check a value must
pass before any step runs. Nothing here imports TensorFlow, so a mistake costs seconds.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

from components.step import InputError

# keras.applications' models (Keras 3.15; tests/test_parameters.py checks the list against
# the installed Keras) and the smallest image each accepts, where that is more than 32.
BACKBONES = [
    "ConvNeXtBase",
    "ConvNeXtLarge",
    "ConvNeXtSmall",
    "ConvNeXtTiny",
    "ConvNeXtXLarge",
    "DenseNet121",
    "DenseNet169",
    "DenseNet201",
    "EfficientNetB0",
    "EfficientNetB1",
    "EfficientNetB2",
    "EfficientNetB3",
    "EfficientNetB4",
    "EfficientNetB5",
    "EfficientNetB6",
    "EfficientNetB7",
    "EfficientNetV2B0",
    "EfficientNetV2B1",
    "EfficientNetV2B2",
    "EfficientNetV2B3",
    "EfficientNetV2L",
    "EfficientNetV2M",
    "EfficientNetV2S",
    "InceptionResNetV2",
    "InceptionV3",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Large",
    "MobileNetV3Small",
    "NASNetLarge",
    "NASNetMobile",
    "ResNet101",
    "ResNet101V2",
    "ResNet152",
    "ResNet152V2",
    "ResNet50",
    "ResNet50V2",
    "VGG16",
    "VGG19",
    "Xception",
]
MIN_IMAGE_SIZE = {"InceptionResNetV2": 75, "InceptionV3": 75, "Xception": 71}
SMALLEST_IMAGE = 32
WEIGHTS = ("imagenet", "none", "auto")
VERIFY_EXPORT = ("hash", "reload")

# Numeric parameters: (smallest, largest), inclusive.
RANGES: dict[str, tuple[float, float]] = {
    "image_size": (SMALLEST_IMAGE, 1024),
    "epochs": (1, 100_000),
    "batch_size": (1, 4096),
    "patience": (0, 100_000),
    "seed": (0, 2**31 - 1),
    "train_fraction": (0.01, 0.99),
    "val_fraction": (0.0, 0.9),
    "augment_views": (1, 100),
    "augment_rotation": (0.0, 180.0),
    "augment_zoom": (0.0, 0.9),
    "augment_translation": (0.0, 0.5),
    "augment_contrast": (0.0, 1.0),
    "fine_tune_layers": (0, 10_000),
    "fine_tune_lr": (1e-8, 1.0),
    "fine_tune_epochs": (1, 10_000),
    "min_accuracy": (0.0, 1.0),
    "max_regression": (0.0, 1.0),
    "max_image_pixels": (1, 1_000_000_000),
    "shard_mb": (0.01, 10_000),
    # Tens of tasks, each taking many shards: KFP backends cap loop sizes and collected
    # artifacts (Vertex at 100).
    "extract_workers": (1, 100),
    "feature_memory_mb": (0, 1_000_000),
    "serving_sample": (1, 100_000),
    "gate_sample": (1, 10_000_000),
}


# What a value of each KFP type may be (a float parameter takes an int, as a float).
KINDS: dict[str, tuple[type, ...]] = {
    "String": (str,),
    "Integer": (int,),
    "Float": (float, int),
    "Boolean": (bool,),
}


def typed(name: str, value: Any) -> Any:
    """``value`` (say, from a YAML config file) as the parameter's type, or an InputError
    naming it: YAML's ``2.5`` or ``true`` for an int, ``"false"`` for a bool, ``5`` or
    ``null`` for a name would otherwise pass every check, or crash one."""
    kind = pipeline_inputs()[name].type
    if not isinstance(value, KINDS[kind]) or isinstance(value, bool) != (kind == "Boolean"):
        raise InputError(f"{name} {shown(value)}: must be {kind.lower()} (a {kind} parameter)")
    if kind != "Float":
        return value
    try:
        return float(value)
    except OverflowError:
        raise InputError(f"{name} {shown(value)}: too large for a float") from None


def shown(value: Any, limit: int = 60) -> str:
    """``value`` for a one-line message: as given, unless it holds control characters
    (then quoted with escapes) or is long (then cut)."""
    if isinstance(value, int) and abs(value) > 10**limit:
        digits = len(format(abs(value), "x"))
        return f"{'-' if value < 0 else ''}<an integer of {digits} hex digits>"
    text = str(value) if isinstance(value, str | int | float) else repr(value)
    if any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in text):
        text = repr(text)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def pipeline_inputs() -> dict[str, Any]:
    """Name -> KFP's input spec (``default``, ``description``) of the pipeline."""
    from pipeline import shapes_pipeline

    return dict(shapes_pipeline.component_spec.inputs)


def defaults() -> dict[str, Any]:
    """Every parameter's default (None where the pipeline has none: it must be given)."""
    return {name: spec.default for name, spec in pipeline_inputs().items()}


def check(params: dict[str, Any]) -> None:
    """Raises InputError, naming the option and what is allowed, for the first bad value."""
    for name, (low, high) in RANGES.items():
        value = params[name]
        if not low <= value <= high:
            raise InputError(f"{option(name)} {shown(value)}: must be between {low} and {high}")
    if params["train_fraction"] + params["val_fraction"] >= 1:
        raise InputError(
            f"--train-fraction {params['train_fraction']} and --val-fraction "
            f"{params['val_fraction']}: they share the non-test part, so val must be < 1"
        )
    backbone = params["backbone"]
    if backbone not in BACKBONES:
        # case-blind: "efficientnetv2l" is closest to EfficientNetV2L, not to EfficientNetB2
        names = {b.lower(): b for b in BACKBONES}
        close = [names[c] for c in difflib.get_close_matches(backbone.lower(), names, n=3)]
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise InputError(
            f"--backbone {shown(backbone)}: not a keras.applications model; {hint}"
            f"choices: {', '.join(BACKBONES)}"
        )
    smallest = MIN_IMAGE_SIZE.get(backbone, SMALLEST_IMAGE)
    if params["image_size"] < smallest:
        raise InputError(
            f"--image-size {params['image_size']}: {backbone} needs at least {smallest}"
        )
    if params["verify_export"] not in VERIFY_EXPORT:
        raise InputError(
            f"--verify-export {shown(params['verify_export'])}: one of {', '.join(VERIFY_EXPORT)}"
        )
    weights = params["weights"]
    if weights not in WEIGHTS and not weights.startswith("gs://") and not os.path.isfile(weights):
        raise InputError(
            f"--weights {shown(weights)}: not one of {', '.join(WEIGHTS)}, and no such file; or "
            "give a local or gs:// weights file of the backbone without its top"
        )
    cache = params["backbone_cache"]
    if cache and not cache.startswith("gs://") and os.path.isfile(cache):
        raise InputError(f"--backbone-cache {shown(cache)}: a file, not a folder or gs:// URI")


def option(name: str) -> str:
    return f"--{name.replace('_', '-')}"
