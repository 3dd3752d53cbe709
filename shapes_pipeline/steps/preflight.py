"""What ``run`` checks before any step starts, so that bad input never costs a run: the
data (the split step's own checks, writing nothing), the registry and the weights."""

from __future__ import annotations

import os
from pathlib import Path

from shapes_pipeline.helpers import registry, storage
from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.steps import split


def resolve_local(params: dict, pipeline_root: str) -> dict:
    """Local paths made absolute (the steps run elsewhere); without ``data``, demo shapes,
    written to ``<pipeline root>/demo-data`` the first time."""
    params = dict(params)
    if params["data"] is None:
        params["data"] = str(Path(pipeline_root, "demo-data").resolve())
        if not Path(params["data"]).exists():
            from shapes_pipeline.helpers.demo_data import generate as make_demo

            make_demo(params["data"])
    for key in ("data", "registry"):
        params[key] = absolute(params[key])
    if params["weights"] not in ("imagenet", "none", "auto"):
        params["weights"] = absolute(params["weights"])
    return params


def absolute(uri: str) -> str:
    return uri if storage.is_gcs(uri) else str(Path(uri).resolve())


def check_inputs(params: dict) -> str:
    """Raises InputError for bad data, registry or weights; else says what data was found."""
    classes = split.scan(
        params["data"],
        **{k: params[k] for k in ("seed", "train_fraction", "val_fraction")},
        max_pixels=params["max_image_pixels"],
    )
    storage.check_bucket(params["registry"])
    registry.check(params["registry"], params["model_name"])
    if params["weights"] not in ("imagenet", "none", "auto"):
        storage.check_exists(params["weights"])
    images = sum(map(len, classes.values()))
    return f"data: {params['data']}: {images} images, classes {list(classes)}"


def check_output(path: str, option: str) -> None:
    """A file the user named for an output, refused before any step rather than after the
    run (whose model may be published by then) fails to write it."""
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise InputError(f"{option} {path}: a folder; name a file")
    if not folder.is_dir():
        raise InputError(f"{option} {path}: no folder {folder} to write it in; create it first")
    writable = os.access(folder, os.W_OK | os.X_OK)
    if not writable or (target.exists() and not os.access(target, os.W_OK)):
        raise InputError(
            f"{option} {path}: cannot be written (permission denied); name another file"
        )
