"""Metamorphic checks of extract and train: relations between two runs that must hold
whatever the exact numbers are, here for augmentation settings, the precision features are
stored in, and training options with fine-tuning and augmentation. Input order and class
names are in test_metamorphic.py; the data (15 images of waves, far apart) and the
backbone (a random VGG16 at 32 px) are in waves.py.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import waves
from helpers import extract_args, feature_dirs, images_by_path, train_args
from waves import SETTINGS, features, split

from shapes_pipeline.helpers import dataset, serving, shards
from shapes_pipeline.helpers.facts import MILD_AUGMENTATION

pytestmark = pytest.mark.slow  # extracts and trains

IDENTITY = {
    "rotation": 0.0, "zoom": 0.0, "translation": 0.0, "contrast": 0.0,
    "flip_horizontal": False, "flip_vertical": False,
}  # fmt: skip

# the shared fixtures this module's tests take (built once a session: see waves.py)
waves_source, waves_split, waves_model = waves.waves_source, waves.waves_split, waves.waves_model


@pytest.fixture(scope="module")
def plain(waves_model) -> dict:
    (folder,) = feature_dirs(waves_model)
    return features(folder)


@pytest.fixture(scope="module")
def mild_dir(waves_split) -> Path:
    """Features with the default (mild) augmentation: 3 views of each training image."""
    from shapes_pipeline.steps.extract import extract

    out = waves_split.parent / "mild"
    extract(str(waves_split), str(out), group=0, groups=1, batch_size=32,
            **extract_args(augment=True, augment_views=3, **SETTINGS))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def mild(mild_dir) -> dict:
    return features(mild_dir)


def _source(path: str) -> str:
    """``class/file`` of a manifest path (``split/class/file``)."""
    return path.split("/", 1)[1]


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
    from shapes_pipeline.steps.extract import extract

    extract(str(waves_split), str(tmp_path / "f"), group=0, groups=1, batch_size=32,
            **extract_args(augment=True, augment_views=2, augmentation=IDENTITY,
                           **SETTINGS))  # fmt: skip
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

    from shapes_pipeline.steps.evaluate import TOLERANCE

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

    from shapes_pipeline.steps.extract import extract
    from shapes_pipeline.steps.train import train

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
            extract(str(data), folder, group=g, groups=groups, batch_size=4,
                    precision=precision, **extract_args(augment=True, augment_views=1,
                    augmentation=augmentation, **SETTINGS))  # fmt: skip
        facts = train(str(data), folders, str(tmp_path / "m"), precision=precision,
                      **train_args(batch_size=4, epochs=2, patience=5, augment=True,
                      augment_views=1, augmentation=augmentation, **FINE_TUNE, **settings,
                      **SETTINGS))  # fmt: skip
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
