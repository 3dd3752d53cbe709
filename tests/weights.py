"""What some tests need from outside the repository, where the tests look for it, and the
one line that names what is missing. Imports nothing heavy: ``make test`` asks it first
(``scripts/test_weights.py``)."""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS = "mobilenet_1_0_224_imagenet_notop.weights.h5"
CHROMIUM = "/usr/bin/chromium"
# What some tests need from outside the repository, and the one line that says so.
MISSING = {
    "weights": f"no {WEIGHTS} in ../shared/weights/ and none downloaded by Keras: set "
    "SHAPES_TEST_WEIGHTS to that file",
    "chromium": f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)",
}


def keras_cached_weights() -> Path:
    """Where ``make test`` keeps the weights Keras downloaded (``scripts/test_weights.py``):
    beside Keras' own downloads."""
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(home) / "models" / WEIGHTS


def weights_file() -> Path | None:
    """The first weights file there is: ``SHAPES_TEST_WEIGHTS``, ``../shared/weights/``,
    or the one Keras downloaded."""
    candidates = [
        os.environ.get("SHAPES_TEST_WEIGHTS", ""),
        Path(__file__).resolve().parents[2] / "shared" / "weights" / WEIGHTS,
        Path("/work/shared/weights") / WEIGHTS,
        keras_cached_weights(),
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def missing_prerequisites() -> list[str]:
    """The lines of :data:`MISSING` for what this machine lacks."""
    lacks = {"weights": weights_file() is None, "chromium": not Path(CHROMIUM).exists()}
    return [MISSING[k] for k, missing in lacks.items() if missing]
