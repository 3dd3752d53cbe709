"""The data and model the metamorphic tests (test_metamorphic.py and
test_metamorphic_augmentation.py) share: 15 images of waves (3 classes by frequency, 5
orientations 36 degrees apart, each its own colours), so every image is far from every
other; a random VGG16 at 32 px, whose features and trained head differ from image to image
(a MobileNet with ImageNet weights at 48 px keeps only a few non-zero features of its 1x1
map, which do not tell two waves apart after a 10 degree turn); and how to read features.

The fixtures here are built once a session, whichever module asks first: each test module
binds them (pytest looks for a fixture in the module using it), and a fixture bound in two
modules would otherwise run once in each.
"""

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_varied, images_by_path, train_model
from PIL import Image

from shapes_pipeline.helpers import dataset, serving, shards

SIZE = 32
SETTINGS = {"backbone": "VGG16", "weights": "none", "image_size": SIZE, "seed": 0}
HEAD = {"epochs": 60, "patience": 60}
CYCLES = {"coarse": 1.0, "medium": 2.0, "fine": 3.5}  # per image


def write_waves(root: Path, names: dict[str, str] | None = None) -> Path:
    """The 15 wave images, each class in the folder ``names`` gives it (default: its own)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    for c, (label, cycles) in enumerate(CYCLES.items()):
        folder = root / (names or {}).get(label, label)
        folder.mkdir(parents=True)
        for i in range(5):
            angle = math.pi * i / 5 + 0.3 * c
            colours = rng.integers(0, 256, (2, 3))
            phase = np.sin(2 * np.pi * cycles * (math.cos(angle) * xx + math.sin(angle) * yy))
            t = ((phase + 1) / 2)[..., None]
            pixels = colours[0] * t + colours[1] * (1 - t)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:02d}.png")
    return root


def split(source: Path, out: Path, val_fraction: float = 0.1) -> Path:
    from shapes_pipeline.steps.split import split_dataset

    split_dataset(str(source), str(out), seed=230, train_fraction=0.8, val_fraction=val_fraction)
    return out


def features(folder: str | Path) -> dict[tuple[int, int], tuple[np.ndarray, int]]:
    """(manifest row, view) -> (features as stored, label) of one extract task's output."""
    index = json.loads(Path(folder, shards.FEATURE_INDEX).read_text())
    found = {}
    for shard in index["shards"]:
        parse = shards.parse_features(shard["dtype"], index["dim"])
        for batch in shards.records(Path(folder, shard["file"]), shard["bytes"], parse, 64):
            for row, view, label, values in zip(
                batch["row"], batch["view"], batch["label"], batch["features"], strict=True
            ):
                assert (int(row), int(view)) not in found, "a record written twice"
                found[int(row), int(view)] = (values, int(label))
    return found


def probabilities_by_path(model_dir: Path, dataset_dir: Path) -> dict[str, np.ndarray]:
    """The served model's probabilities of every image of the data set, by manifest path."""
    images = {p: b for s in dataset.SPLITS for p, b in images_by_path(dataset_dir, s).items()}
    paths = sorted(images)
    predict, _ = serving.load(model_dir)
    return dict(zip(paths, predict([images[p] for p in paths]), strict=True))


@functools.cache
def _waves_under(base: Path) -> Path:
    return write_waves(base / "waves" / "src")


@pytest.fixture(scope="module")
def waves_source(tmp_path_factory) -> Path:
    return _waves_under(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
@functools.cache
def waves_split(waves_source) -> Path:
    return split(waves_source, waves_source.parent / "dataset")


@pytest.fixture(scope="module")
@functools.cache
def waves_model(waves_split) -> Path:
    """The head trained on plain (unaugmented) features; its features are in
    ``model-features-0``. Its probabilities differ from image to image (by little: the
    head, on 9 images, is barely past its start)."""
    out = waves_split.parent / "model"
    train_model(waves_split, out, **HEAD, **SETTINGS)
    # apart by far more than predict's 6 printed digits and the 1e-4 of evaluate's check
    assert_varied(np.array(list(probabilities_by_path(out, waves_split).values())), 1e-4)
    return out
