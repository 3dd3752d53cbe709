"""What ``run`` checks before any step starts, so that bad input never costs a run: the
data (the split step's own checks, writing nothing), the registry and the weights."""

from __future__ import annotations

import os
import subprocess
import sys
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
        check_weights_fit(params)
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


def check_weights_fit(params: dict) -> None:
    """A weights file is loaded into the backbone (without its top) before any step: a file
    of another backbone, or of one with its top, would fail a run's extract step with
    Keras' message, thousands of characters of tensor shapes long. It is loaded in a
    process of its own, so TensorFlow's start and its log lines stay out of this one."""
    name, size, weights = params["backbone"], params["image_size"], params["weights"]
    loaded = subprocess.run(
        [sys.executable, "-m", __name__, name, weights, str(size)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if loaded.returncode == EXIT_DOES_NOT_FIT:
        raise InputError(
            f"--weights {weights}: does not load into {name} without its top (at "
            f"--image-size {size}); give that backbone's weights file, saved with "
            "include_top=False"
        )
    if loaded.returncode:
        raise RuntimeError(f"loading {weights} into {name} failed: {loaded.stderr[-2000:]}")


EXIT_DOES_NOT_FIT = 3


def main(argv: list[str]) -> int:
    """``python -m shapes_pipeline.steps.preflight BACKBONE WEIGHTS IMAGE_SIZE``: exit 0
    where the weights load into the backbone, ``EXIT_DOES_NOT_FIT`` where they do not."""
    from shapes_pipeline.helpers import backbone

    name, weights, size = argv
    try:
        backbone.build_backbone(name, weights, int(size))
    except InputError:
        return EXIT_DOES_NOT_FIT
    return 0


def weights_note(params: dict) -> str | None:
    """What ``weights=auto`` (the local default) will do, said before any step: ImageNet
    weights only where Keras has or can download them; else a random backbone, whose
    poor accuracy the gate will then refuse."""
    if params["weights"] != "auto":
        return None
    return (
        "note: --weights auto: ImageNet weights if Keras has them cached or can download "
        "them; otherwise the backbone is random and accuracy poor. Offline, give "
        "--weights FILE (the backbone's weights without its top)"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
