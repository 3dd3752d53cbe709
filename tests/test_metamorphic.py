"""Metamorphic checks of the ML steps: relations between two runs that must hold whatever
the exact numbers are (input order, class names, augmentation settings, stored precision,
training options).

The data are 15 images of waves (3 classes by frequency, 5 orientations 36 degrees apart,
each its own colours), so every image is far from every other; the backbone is a random
VGG16 at 32 px, whose features and trained head differ from image to image (a MobileNet
with ImageNet weights at 48 px keeps only a few non-zero features of its 1x1 map, which
do not tell two waves apart after a 10 degree turn).
"""

import csv
import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    assert_varied,
    cli_here,
    feature_dirs,
    images_by_path,
    save_oracle,
    save_oracle_features,
    train_model,
    tree_bytes,
)
from PIL import Image

from components import dataset, serving, shards
from components.facts import MILD_AUGMENTATION
from components.predictions import read as read_predictions

pytestmark = pytest.mark.slow  # extracts and trains

SIZE = 32
SETTINGS = {"backbone": "VGG16", "weights": "none", "image_size": SIZE, "seed": 0}
HEAD = {"epochs": 60, "patience": 60}
CYCLES = {"coarse": 1.0, "medium": 2.0, "fine": 3.5}  # per image
IDENTITY = {
    "rotation": 0.0, "zoom": 0.0, "translation": 0.0, "contrast": 0.0,
    "flip_horizontal": False, "flip_vertical": False,
}  # fmt: skip


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
    from components.split import split_dataset

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


def all_features(model_dir: Path) -> dict:
    return {k: v for d in feature_dirs(model_dir) for k, v in features(d).items()}


def probabilities_by_path(model_dir: Path, dataset_dir: Path) -> dict[str, np.ndarray]:
    """The served model's probabilities of every image of the data set, by manifest path."""
    images = {p: b for s in dataset.SPLITS for p, b in images_by_path(dataset_dir, s).items()}
    paths = sorted(images)
    predict, _ = serving.load(model_dir)
    return dict(zip(paths, predict([images[p] for p in paths]), strict=True))


@pytest.fixture(scope="module")
def waves_source(tmp_path_factory) -> Path:
    return write_waves(tmp_path_factory.mktemp("waves") / "src")


@pytest.fixture(scope="module")
def waves_split(waves_source) -> Path:
    return split(waves_source, waves_source.parent / "dataset")


@pytest.fixture(scope="module")
def waves_model(waves_split) -> Path:
    """The head trained on plain (unaugmented) features; its features are in
    ``model-features-0``. Its probabilities differ from image to image (by little: the
    head, on 9 images, is barely past its start)."""
    out = waves_split.parent / "model"
    train_model(waves_split, out, **HEAD, **SETTINGS)
    # apart by far more than predict's 6 printed digits and the 1e-4 of evaluate's check
    assert_varied(np.array(list(probabilities_by_path(out, waves_split).values())), 1e-4)
    return out


@pytest.fixture(scope="module")
def plain(waves_model) -> dict:
    (folder,) = feature_dirs(waves_model)
    return features(folder)


@pytest.fixture(scope="module")
def mild_dir(waves_split) -> Path:
    """Features with the default (mild) augmentation: 3 views of each training image."""
    from components.extract import extract

    out = waves_split.parent / "mild"
    extract(str(waves_split), str(out), group=0, groups=1, batch_size=32, augment=True,
            augment_views=3, **SETTINGS)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def mild(mild_dir) -> dict:
    return features(mild_dir)


# 1. Input order ---------------------------------------------------------------------------


def test_predict_gives_each_image_its_own_probabilities_whatever_the_order(
    waves_model, waves_split, tmp_path
):
    """``predict`` given the same files in another order: each file gets the probabilities
    it got before, keyed by its path (the rows differ, so a mix-up shows)."""
    version = tmp_path / "version"
    shutil.copytree(waves_model, version)
    (version / "metadata.json").write_text("{}")
    files = []
    for path, image in sorted(images_by_path(waves_split, "train").items()):
        files.append(tmp_path / "images" / path.replace("/", "_"))
        files[-1].parent.mkdir(exist_ok=True)
        files[-1].write_bytes(image)

    def predicted(order: list[Path]) -> dict[str, list[float]]:
        done = cli_here("predict", "--model", str(version), *map(str, order), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        assert [r["path"] for r in rows] == [str(p) for p in order]
        return {r["path"]: list(r["probabilities"].values()) for r in rows}

    first = predicted(files)
    assert_varied(np.array(list(first.values())), margin=1e-5)
    shuffled = files[::-1]
    random.Random(1).shuffle(shuffled)
    for order in (files[::-1], shuffled):
        assert predicted(order) == first


def test_training_on_feature_records_in_another_order_gives_the_same_model(
    waves_model, waves_split, tmp_path
):
    """Every feature shard's records shuffled (as another grouping or writer would order
    them): the same history, epoch for epoch, and the same probabilities for every image."""
    import tensorflow as tf

    from components.train import train

    (folder,) = feature_dirs(waves_model)
    shuffled = tmp_path / "features"
    shutil.copytree(folder, shuffled)
    for n, path in enumerate(sorted(shuffled.glob("*.tfrecord"))):
        records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
        random.Random(n).shuffle(records)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in records:
                writer.write(record)
    assert features(shuffled).keys() == features(folder).keys()
    train(str(waves_split), [str(shuffled)], str(tmp_path / "m"), batch_size=32, **HEAD,
          **SETTINGS)  # fmt: skip
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert history == json.loads((waves_model / "history.json").read_text())
    again = probabilities_by_path(tmp_path / "m", waves_split)
    before = probabilities_by_path(waves_model, waves_split)
    for path, row in before.items():
        np.testing.assert_array_equal(again[path], row, err_msg=path)


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_the_split_does_not_depend_on_the_order_the_folder_lists_its_files(
    waves_source, waves_split, tmp_path, monkeypatch, order
):
    """A file system (or bucket) listing the class folders and their files in another order
    gives the same data set byte for byte: manifest, shards (labels included), index; so
    every later step, and every image's prediction, is the same."""
    listed = Path.iterdir

    def another_order(self):
        entries = sorted(listed(self))
        if order == "reversed":
            return iter(entries[::-1])
        random.Random(str(self.name)).shuffle(entries)
        return iter(entries)

    monkeypatch.setattr(Path, "iterdir", another_order)
    split(waves_source, tmp_path / "dataset")
    monkeypatch.undo()
    assert tree_bytes(tmp_path / "dataset") == tree_bytes(waves_split)


# 2. Class names ---------------------------------------------------------------------------

# coarse, fine, medium -> zigzag, alpha, mid: the sorted order becomes fine, medium, coarse
RENAMED = {"coarse": "zigzag", "fine": "alpha", "medium": "mid"}


def _source(path: str) -> str:
    """``class/file`` of a manifest path (``split/class/file``)."""
    return path.split("/", 1)[1]


def _renamed_path(path: str) -> str:
    split_name, label, file = path.split("/")
    return f"{split_name}/{RENAMED[label]}/{file}"


def test_renaming_class_folders_relabels_each_images_features(waves_model, waves_split, tmp_path):
    """Class folders renamed so that their sorted order changes: every image gets the
    features it got before, labelled with its new class's place among the sorted new
    names (the index the model's outputs follow)."""
    from components.extract import extract

    renamed = split(write_waves(tmp_path / "src", RENAMED), tmp_path / "dataset")
    extract(str(renamed), str(tmp_path / "f"), group=0, groups=1, batch_size=32, **SETTINGS)
    new_classes = sorted(RENAMED.values())
    assert shards.read_index(renamed)["classes"] == new_classes
    before = {e.path: (i, e.label) for i, e in enumerate(dataset.read_manifest(waves_split))}
    old = features(feature_dirs(waves_model)[0])
    new = features(tmp_path / "f")
    manifest = dataset.read_manifest(renamed)
    assert sorted(e.path for e in manifest) == sorted(_renamed_path(p) for p in before)
    moved = 0
    for path, (row, label) in before.items():
        new_row = next(i for i, e in enumerate(manifest) if e.path == _renamed_path(path))
        values, new_label = new[new_row, 0]
        np.testing.assert_array_equal(values, old[row, 0][0], err_msg=path)
        assert new_label == new_classes.index(RENAMED[label]), path
        moved += new_label != old[row, 0][1]
    assert moved == len(before)  # every class changed its index, so a mix-up shows


def test_renaming_class_folders_renames_the_evaluated_predictions(tmp_path):
    """The same network under renamed classes (its outputs reordered to the new names'
    sorted order), evaluated on the data with renamed folders: each image gets its
    predictions renamed, probabilities permuted with the columns, nothing else changes."""
    from components.evaluate import evaluate

    gains = np.array([[0.02, 0.0, -0.01], [0.0, 0.015, 0.0], [-0.01, 0.0, 0.02]], np.float32)
    old = sorted(CYCLES)  # coarse, fine, medium
    results = {}
    for name, names in (("before", None), ("after", RENAMED)):
        root = tmp_path / name
        classes = sorted((names or {}).get(c, c) for c in old)
        # column of class c: the column the class had before renaming
        kernel = gains[:, [old.index(next(o for o in old if (names or {}).get(o, o) == c))
                           for c in classes]]  # fmt: skip
        split(write_waves(root / "src", names), root / "ds")
        save_oracle(root / "model", kernel, np.zeros(3, np.float32), classes)
        save_oracle_features(root / "ds", root / "features")
        evaluation = evaluate(
            str(root / "ds"), [str(root / "features")], str(root / "model"),
            predictions_path=str(root / "p.csv"), report_path=str(root / "r.html"),
            evaluation_path=str(root / "e.json"),
        )  # fmt: skip
        read_classes, rows = read_predictions(root / "p.csv")
        assert read_classes == classes
        with open(root / "p.csv") as f:
            predicted = {r["path"]: r["predicted_class"] for r in csv.DictReader(f)}
        results[name] = evaluation, classes, rows, predicted
    (e0, c0, rows0, p0), (e1, c1, rows1, p1) = results["before"], results["after"]
    assert {_renamed_path(p): RENAMED[c] for p, c in p0.items()} == p1
    assert_varied(np.array(list(rows0.values())))
    assert sorted(rows1) == sorted(_renamed_path(p) for p in rows0)
    for path, row in rows0.items():
        moved = rows1[_renamed_path(path)]
        for i, c in enumerate(c0):
            assert moved[c1.index(RENAMED[c])] == row[i], path
    assert e1["test_accuracy"] == e0["test_accuracy"]
    perm = [c0.index(next(o for o in c0 if RENAMED[o] == c)) for c in c1]
    assert np.array(e1["confusion_matrix"]).tolist() == (
        np.array(e0["confusion_matrix"])[np.ix_(perm, perm)].tolist()
    )


# 3. and 4. Augmentation -------------------------------------------------------------------


def _views(dataset_dir: Path, views: int) -> set[tuple[int, int]]:
    """The (row, view) records extract must write: views of training images only."""
    return {
        (row, view)
        for row, e in enumerate(dataset.read_manifest(dataset_dir))
        for view in range(1 + (views if e.split == "train" else 0))
    }


def test_augmentation_at_its_identity_settings_gives_the_plain_features(
    waves_split, plain, tmp_path
):
    """Every transform off (no turn, zoom, shift, contrast or flip) with augmentation on:
    each augmented view's features are its image's plain features, exactly."""
    from components.extract import extract

    extract(str(waves_split), str(tmp_path / "f"), group=0, groups=1, batch_size=32,
            augment=True, augment_views=2, augmentation=IDENTITY, **SETTINGS)  # fmt: skip
    got = features(tmp_path / "f")
    assert got.keys() == _views(waves_split, 2)
    for (row, view), (values, label) in got.items():
        np.testing.assert_array_equal(values, plain[row, 0][0], err_msg=f"{row}, {view}")
        assert label == plain[row, 0][1]


def test_every_augmented_view_is_nearest_its_own_image(waves_split, plain, mild):
    """The default augmentation is mild: each augmented view's features are nearer its own
    image's plain features than any other image's, and they are not the plain ones."""
    assert mild.keys() == _views(waves_split, 3)
    rows = sorted(row for row, _ in plain)
    table = np.array([plain[row, 0][0] for row in rows], np.float32)
    for (row, view), (values, _) in sorted(mild.items()):
        if view == 0:
            np.testing.assert_array_equal(values, plain[row, 0][0])
            continue
        distances = np.linalg.norm(table - values.astype(np.float32), axis=1)
        nearest = rows[int(distances.argmin())]
        assert nearest == row, f"view {view} of row {row} is nearest row {nearest}"
        assert distances[rows.index(row)] > 0  # augmented, not a copy


# 5. Stored precision ----------------------------------------------------------------------


def test_stored_features_keep_the_precision_that_scoring_needs(waves_model, waves_split, mild_dir):
    """Test features are stored as float32 (every record's bytes, not only the index), with
    more precision than float16 holds; scored through the head, they give what serving
    gives the test images' bytes within evaluate's tolerance. Train and val: at least
    float16, each record as long as its declared type says."""
    import tensorflow as tf

    from components.evaluate import TOLERANCE

    for folder in (*feature_dirs(waves_model), mild_dir):
        index = json.loads(Path(folder, shards.FEATURE_INDEX).read_text())
        for shard in index["shards"]:
            allowed = {"float32"} if shard["split"] == "test" else {"float16", "float32"}
            assert shard["dtype"] in allowed, shard
            size = index["dim"] * np.dtype(shard["dtype"]).itemsize
            raw = tf.data.TFRecordDataset(str(Path(folder, shard["file"]))).map(
                lambda r: tf.io.parse_single_example(
                    r, {"features": tf.io.FixedLenFeature([], tf.string)}
                )["features"]
            )
            assert {len(r) for r in raw.as_numpy_iterator()} == {size}, shard["file"]
    test = {
        row: values
        for (row, _), (values, _) in features(feature_dirs(waves_model)[0]).items()
        if dataset.read_manifest(waves_split)[row].split == "test"
    }
    stored = np.array([test[row] for row in sorted(test)])
    assert stored.dtype == np.float32
    assert (stored.astype(np.float16).astype(np.float32) != stored).any()
    served = serving.open_served(waves_model)
    images = dict(shards.image_rows(waves_split, "test", set(test)))
    from_bytes = served.predict([images[row] for row in sorted(test)])
    from_features = served.predict_features(stored)
    assert np.abs(from_features - from_bytes).max() <= TOLERANCE


# 6. Training options with fine-tuning and augmentation ------------------------------------

OPTIONS = {
    "no-validation-split": {"val_fraction": 0.0},
    "features-streamed": {"feature_memory_mb": 0},
    "mixed-precision": {"precision": "mixed_float16"},
    "two-extract-workers": {"groups": 2},
    "augmentation-off-by-settings": {"augmentation": IDENTITY},
}
FINE_TUNE = {"fine_tune_layers": 2, "fine_tune_lr": 1e-4, "fine_tune_epochs": 2}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_trains_with_fine_tuning_and_augmentation_never_of_val_or_test(
    waves_source, waves_split, plain, tmp_path, option
):
    """Each training option, with fine-tuning and augmentation on, still trains and saves a
    model; training images get their views, and validation and test images never do: they
    have one record each, the plain features; and the saved model's loss on the plain
    validation images is the best validation loss training recorded (where fine-tuning
    was kept, that shows it was validated on plain images too)."""
    import keras

    from components.extract import extract
    from components.train import train

    settings = dict(OPTIONS[option])
    data = waves_split
    if "val_fraction" in settings:
        data = split(waves_source, tmp_path / "ds", settings.pop("val_fraction"))
    groups = settings.pop("groups", 1)
    augmentation = settings.pop("augmentation", MILD_AUGMENTATION)
    precision = settings.pop("precision", "auto")
    folders = [str(tmp_path / f"f{g}") for g in range(groups)]
    try:
        for g, folder in enumerate(folders):
            extract(str(data), folder, group=g, groups=groups, batch_size=4, augment=True,
                    augment_views=1, augmentation=augmentation, precision=precision,
                    **SETTINGS)  # fmt: skip
        facts = train(str(data), folders, str(tmp_path / "m"), batch_size=4, epochs=2,
                      patience=5, augment=True, augmentation=augmentation,
                      precision=precision, **FINE_TUNE, **settings, **SETTINGS)  # fmt: skip
        predict, _ = serving.load(tmp_path / "m")
        manifest = dataset.read_manifest(data)
        images = {p: b for s in dataset.SPLITS for p, b in images_by_path(data, s).items()}
        scored = predict([images[e.path] for e in manifest])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert facts["augment"] and facts["augmentation"] == augmentation
    assert facts["fine_tune_layers"] == 2 and facts["epochs_run"] == 2 + 2
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert all(np.isfinite(v).all() for v in history.values())
    np.testing.assert_allclose(scored.sum(axis=1), 1.0, rtol=1e-5)

    got = {k: v for folder in folders for k, v in features(folder).items()}
    assert got.keys() == _views(data, 1)
    # each image's plain features, by its file in the source (the rows differ between splits)
    plain_of = {
        _source(e.path): plain[row, 0][0]
        for row, e in enumerate(dataset.read_manifest(waves_split))
    }
    # how far each record is from its image's plain features: 0 for one that was not
    # augmented, but for float16 rounding under mixed precision; more for an augmented view
    plain_views, augmented_views = [], []
    for (row, view), (values, _) in got.items():
        gap = np.abs(values.astype(np.float32) - plain_of[_source(manifest[row].path)]).max()
        is_plain = manifest[row].split != "train" or view == 0 or augmentation == IDENTITY
        (plain_views if is_plain else augmented_views).append(gap)
    if precision == "auto":
        assert max(plain_views) == 0
    assert max(plain_views) < min(augmented_views, default=np.inf)

    val = [i for i, e in enumerate(manifest) if e.split == "val"]
    if not val:
        assert not facts["early_stopping"] and "val_loss" not in history
        return
    labels = dataset.label_indices([manifest[i] for i in val], facts["classes"], data)
    loss = -np.log(np.clip(scored[val, labels], 1e-7, 1)).mean()
    assert loss == pytest.approx(
        min(history["val_loss"]), rel=1e-4 if precision == "auto" else 1e-2
    )
