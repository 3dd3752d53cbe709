"""Every check a pipeline parameter's value must pass before any step runs, from the
parameter table (``shapes_pipeline/helpers/settings.py``) and the rules that join several.
Nothing here imports TensorFlow, so a mistake costs seconds.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import PurePosixPath
from typing import Any

from shapes_pipeline.helpers.settings import (
    BACKBONES,
    BY_NAME,
    MIN_IMAGE_SIZE,
    PARAMETERS,
    SMALLEST_IMAGE,
    WEIGHTS,
)
from shapes_pipeline.helpers.step import InputError

# Numeric parameters: (smallest, largest), inclusive.
RANGES: dict[str, tuple[float, float]] = {p.name: p.range for p in PARAMETERS if p.range}
# What a value of each type may be, say from a YAML file (a float takes an int, as a float).
KINDS: dict[type, tuple[type, ...]] = {str: (str,), int: (int,), float: (float, int), bool: (bool,)}


def typed(name: str, value: Any) -> Any:
    """``value`` (say, from a YAML config file) as the parameter's type, or an InputError
    naming it: YAML's ``2.5`` or ``true`` for an int, ``"false"`` for a bool, ``5`` or
    ``null`` for a name would otherwise pass every check, or crash one."""
    kind = BY_NAME[name].kind
    if not isinstance(value, KINDS[kind]) or isinstance(value, bool) != (kind is bool):
        raise InputError(f"{name} {shown(value)}: must be {TYPE_NAMES[kind]}")
    if kind is not float:
        return value
    try:
        return float(value)
    except OverflowError:
        raise InputError(f"{name} {shown(value)}: too large for a float") from None


TYPE_NAMES = {str: "string", int: "integer", float: "float", bool: "boolean"}
# The parameters that name a place to read or write; empty is allowed only where it is "off".
LOCATIONS = {"data": False, "registry": False, "weights": False, "backbone_cache": True}
# Anything that starts like a URI: a scheme, a colon, a slash (``s3://``, ``gs:/x``,
# ``file:///x``). A local name may hold a colon, but not a scheme's shape.
URI_LIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/")


def check_location(option: str, value: str, empty_ok: bool = False, remote: bool = True) -> None:
    """A place the project can read or write: a local path, or (``remote``)
    ``gs://BUCKET/...``. An empty value (which would be the current folder), another
    scheme, or a ``gs`` URI without its two slashes or its bucket is refused by name."""
    what = "a local path or a gs://BUCKET/... URI" if remote else "a local path"
    if not value.strip():
        if empty_ok and not value:
            return
        raise InputError(f"{option}: empty; give {what}")
    scheme = URI_LIKE.match(value)
    if value.startswith("gs://") and remote:
        if not value[len("gs://") :].split("/", 1)[0]:
            raise InputError(f"{option} {shown(value)}: no bucket; write gs://BUCKET/PATH")
    elif value.lower().startswith("gs:") and remote:
        raise InputError(f"{option} {shown(value)}: a malformed gs:// URI; write gs://BUCKET/PATH")
    elif scheme or value.lower().startswith("gs:"):
        name = scheme.group(1) if scheme else "gs"
        raise InputError(f"{option} {shown(value)}: {name}: is not supported here; give {what}")


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


def check(params: dict[str, Any]) -> None:
    """Raises InputError, naming the option and what is allowed, for the first bad value."""
    for p in PARAMETERS:  # whatever gave it: a flag, a config file, a caller of the library
        if params[p.name] is not None:
            typed(p.name, params[p.name])
    for name, empty_ok in LOCATIONS.items():  # a weights keyword reads as a local name
        if params[name] is not None:
            check_location(option(name), params[name], empty_ok)
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
        close = [names[c] for c in difflib.get_close_matches(backbone.lower(), names)]
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
    for p in PARAMETERS:  # the backbone's choices are checked above, with a hint
        if p.choices and params[p.name] not in p.choices:
            raise InputError(f"{p.option} {shown(params[p.name])}: one of {', '.join(p.choices)}")
    weights = params["weights"]
    if weights not in WEIGHTS and not weights.startswith("gs://") and not os.path.isfile(weights):
        raise InputError(
            f"--weights {shown(weights)}: not one of {', '.join(WEIGHTS)}, and no such file; or "
            "give a local or gs:// weights file of the backbone without its top"
        )
    cache = params["backbone_cache"]
    if cache and not cache.startswith("gs://") and os.path.isfile(cache):
        raise InputError(f"--backbone-cache {shown(cache)}: a file, not a folder or gs:// URI")


def model_name_from(data: str | None) -> str:
    """The registry name of a model trained on ``data``: its folder's (or gs:// prefix's,
    or .zip's) name in the letters a name may hold, so a model of your photos is not
    published as the demo's. The table's default for the demo data, or a name left empty."""
    default = BY_NAME["model_name"].default
    if not data:
        return default
    base = PurePosixPath(data.rstrip("/")).name.removesuffix(".zip")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).lstrip("._-")[:100].rstrip("._-")
    return name or default


def option(name: str) -> str:
    return f"--{name.replace('_', '-')}"
