"""The sharded data path: groups of shards, fan-out extraction, streaming and multi-device
training, and shards that are damaged."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import ANY_ACCURACY, SERVING_SAMPLE, SMALL, feature_dirs, train_args, train_model

from shapes_pipeline.helpers import shards
from shapes_pipeline.helpers.dataset import DataError
from shapes_pipeline.steps.evaluate import evaluate
from shapes_pipeline.steps.extract import extract
from shapes_pipeline.steps.split import split_dataset
from shapes_pipeline.steps.train import train

pytestmark = pytest.mark.slow  # extracts and trains

SETTINGS = {**SMALL, "seed": 0}


@pytest.fixture(scope="module")
def many_shards(demo_data, tmp_path_factory) -> Path:
    """The demo data in small shards: several per split."""
    out = tmp_path_factory.mktemp("many") / "dataset"
    split_dataset(
        str(demo_data), str(out), seed=230, train_fraction=0.8, val_fraction=0.1, shard_mb=0.004
    )
    assert len(shards.read_index(out)["shards"]) >= 6
    return out


@pytest.mark.parametrize("groups", [1, 2, 3, 5])
def test_every_shard_is_read_by_exactly_one_group(many_shards, groups):
    index = shards.read_index(many_shards)
    planned = shards.groups(many_shards, groups)
    assert planned == list(range(min(groups, len(index["shards"]))))
    read = [s["file"] for g in planned for s in shards.of_group(index, g, groups)]
    assert sorted(read) == sorted(s["file"] for s in index["shards"])


def _features(folder: str) -> dict:
    index = json.loads(Path(folder, shards.FEATURE_INDEX).read_text())
    result = {}
    for shard in index["shards"]:
        parse = shards.parse_features(shard["dtype"], index["dim"])
        for batch in shards.records(Path(folder, shard["file"]), shard["bytes"], parse, 64):
            for row, view, values in zip(
                batch["row"], batch["view"], batch["features"], strict=True
            ):
                result[int(row), int(view)] = values
    return result


def test_one_or_two_extract_workers_give_the_same_features_and_head(many_shards, tmp_path):
    # VGG16: randomly initialised, it still gives varied features (MobileNets give ~1e-11)
    settings = {**SETTINGS, "backbone": "VGG16", "epochs": 3, "patience": 5}
    one = train_model(many_shards, tmp_path / "one", groups=1, augment=True, augment_views=2,
                      **settings)  # fmt: skip
    two = train_model(many_shards, tmp_path / "two", groups=2, augment=True, augment_views=2,
                      **settings)  # fmt: skip
    a = _features(str(tmp_path / "one-features-0"))
    b = {
        **_features(str(tmp_path / "two-features-0")),
        **_features(str(tmp_path / "two-features-1")),
    }
    assert a.keys() == b.keys() and len(a) == 36 * 3 - 2 * (3 + 9)  # train x3 views, val, test
    views = np.array([a[row, view] for row, view in sorted(a) if view < 3], np.float32)
    assert views.std() > 1e-2 and np.abs(views[1:] - views[:-1]).max() > 1e-2  # they vary
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-3, atol=1e-5)
    assert one["epochs_run"] == two["epochs_run"]
    history = [json.loads((tmp_path / m / "history.json").read_text()) for m in ("one", "two")]
    np.testing.assert_allclose(history[0]["loss"], history[1]["loss"], rtol=1e-4)
    np.testing.assert_allclose(history[0]["val_loss"], history[1]["val_loss"], rtol=1e-4)
    # the served model (train's own backbone) gives what the extracted features give
    checked = evaluate(
        str(many_shards), feature_dirs(tmp_path / "two"), str(tmp_path / "two"),
        predictions_path=str(tmp_path / "p.csv"), report_path=str(tmp_path / "r.html"),
        evaluation_path=str(tmp_path / "e.json"),
        gate=ANY_ACCURACY, serving_sample=SERVING_SAMPLE,
    )["serving_check"]  # fmt: skip
    assert checked["images"] == 9 and checked["max_difference"] <= 1e-4


def test_features_above_the_memory_budget_are_streamed(many_shards, tmp_path):
    facts = train_model(
        many_shards, tmp_path / "m", epochs=3, patience=5, feature_memory_mb=0, **SETTINGS
    )
    assert facts["features_in_memory"] is False and "streamed from shards" in facts["caching"]
    assert facts["epochs_run"] == 3
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert len(history["val_loss"]) == 3 and all(np.isfinite(history["loss"]))


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # one byte flipped inside a record: its CRC no longer matches
        damaged = bytearray(data)
        damaged[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(damaged))


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_a_damaged_image_shard_fails_extract_naming_it(many_shards, tmp_path, how):
    copy = tmp_path / "ds"
    import shutil

    shutil.copytree(many_shards, copy)
    shard = shards.read_index(copy)["shards"][0]
    _damage(copy / shard["file"], how)
    with pytest.raises(DataError, match=rf"{shard['file']}: truncated or corrupt shard") as error:
        extract(str(copy), str(tmp_path / "f"), group=0, groups=1, batch_size=8, **SETTINGS)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_a_damaged_feature_shard_fails_training_naming_it(many_shards, tmp_path, how):
    folder = tmp_path / "f"
    extract(str(many_shards), str(folder), group=0, groups=1, batch_size=8, **SETTINGS)
    index = json.loads((folder / shards.FEATURE_INDEX).read_text())
    victim = next(s for s in index["shards"] if s["split"] == "train")
    _damage(folder / victim["file"], how)
    with pytest.raises(DataError, match=rf"{victim['file']}: truncated or corrupt shard"):
        train(str(many_shards), [str(folder)], str(tmp_path / "m"),
              **train_args(epochs=1, batch_size=8, patience=1, **SETTINGS))  # fmt: skip


def test_training_refuses_features_that_miss_a_group(many_shards, tmp_path):
    extract(str(many_shards), str(tmp_path / "f0"), group=0, groups=2, batch_size=8, **SETTINGS)
    with pytest.raises(DataError, match="cover train shards"):
        train(str(many_shards), [str(tmp_path / "f0")], str(tmp_path / "m"),
              **train_args(epochs=1, batch_size=8, patience=1, **SETTINGS))  # fmt: skip


TWO_DEVICES = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from shapes_pipeline.helpers.fit import fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    xv = rng.normal(size=(30, 12)).astype(np.float32)
    yv = (xv[:, 0] > 0).astype(np.int64) + (xv[:, 1] > 0)

    def run(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            net = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu"),
                                    keras.layers.Dense(3, activation="softmax")])
        train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(90, seed=1).batch(16)
        val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(16)
        history = fit(net, train, val, epochs=5, batch_size=16, patience=10, seed=0, log=False,
                      strategy=strategy)
        return strategy.num_replicas_in_sync, history, [w.tolist() for w in net.get_weights()]

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    print(json.dumps([run(tf.distribute.get_strategy()),
                      run(tf.distribute.MirroredStrategy(devices))]))
    """
)


def test_two_devices_train_as_one():
    """MirroredStrategy over two logical CPU devices, each taking half of every batch: the
    same losses and weights as one device, within float tolerance."""
    done = subprocess.run(
        [sys.executable, "-c", TWO_DEVICES], capture_output=True, text=True, check=True
    )
    (n1, one, w1), (n2, two, w2) = json.loads(done.stdout.strip().splitlines()[-1])
    assert (n1, n2) == (1, 2)
    np.testing.assert_allclose(one["loss"], two["loss"], rtol=1e-5)
    np.testing.assert_allclose(one["val_loss"], two["val_loss"], rtol=1e-5)
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert one["loss"][-1] < one["loss"][0]  # it did train


EXTRACT_ON_TWO_DEVICES = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from shapes_pipeline.helpers import model
    from shapes_pipeline.steps.extract import on_every_device

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    x = np.random.default_rng(0).uniform(0, 255, (7, 32, 32, 3)).astype(np.float32)
    out = []
    for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(devices)):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            base = keras.applications.VGG16(include_top=False, weights=None,
                                            input_shape=(32, 32, 3))
            features = model.feature_extractor(base, "VGG16", 32)
        traced = model.compiled(lambda x: features(x, training=False), 32)
        run = on_every_device(traced, features, strategy)
        out.append((strategy.num_replicas_in_sync, run(x).tolist()))
    print(json.dumps(out))
    """
)


def test_extract_on_two_devices_gives_one_devices_features():
    """``--gpus 2``: each device extracts its share of a batch (7 images: 4 and 3), and the
    rows come back in order, as one device gives them."""
    done = subprocess.run(
        [sys.executable, "-c", EXTRACT_ON_TWO_DEVICES], capture_output=True, text=True, check=True
    )
    (n1, one), (n2, two) = json.loads(done.stdout.strip().splitlines()[-1])
    one, two = np.array(one), np.array(two)
    assert (n1, n2) == (1, 2) and one.shape == two.shape == (7, 512)
    assert np.abs(one[1:] - one[:-1]).max() > 1e-2  # rows differ, so an order mix-up shows
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
