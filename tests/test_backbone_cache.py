"""The backbone cache: a run that finds its traced extractor there loads it instead of
building the backbone, and gets the features and the served model a build gives, byte for
byte; the key changes with whatever changes what the extractor computes; a damaged entry
is reported and built around."""

import json
import logging
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import LEARNS, feature_dirs, imagenet_mobilenet, split_images, train_model

from shapes_pipeline.helpers import backbone, backbone_cache, serving, shards

pytestmark = pytest.mark.slow


def _shards(folder: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.tfrecord"))}


def _scores(model_dir: Path, split: Path) -> np.ndarray:
    predict, _ = serving.load(model_dir)
    return predict(split_images(split, "val") + split_images(split, "test"))


def _one_byte_changed(source: Path, target: Path) -> Path:
    """A copy of ``source`` with its middle byte flipped: other content, same size."""
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))
    return target


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))


def test_a_cached_backbone_gives_the_features_and_model_a_built_one_gives(
    split_dir, tmp_path, monkeypatch
):
    """The first run builds and stores, the second loads,
    builds nothing, and writes the same feature shards and the same served model."""
    cache = tmp_path / "cache"
    settings = {"epochs": 3, "patience": 3, "seed": 0, "weights": str(imagenet_mobilenet())}
    cold_facts = train_model(split_dir, tmp_path / "cold", cache=str(cache), **settings, **LEARNS)
    (cold,) = feature_dirs(tmp_path / "cold")
    assert json.loads(Path(cold, shards.FEATURE_INDEX).read_text())["backbone_cache"] == "built"
    assert len(_entries(cache)) == 1

    monkeypatch.setattr(backbone, "build_backbone", lambda *a, **k: pytest.fail("built"))
    warm_facts = train_model(split_dir, tmp_path / "warm", cache=str(cache), **settings, **LEARNS)
    (warm,) = feature_dirs(tmp_path / "warm")
    assert json.loads(Path(warm, shards.FEATURE_INDEX).read_text())["backbone_cache"] == "loaded"
    assert _shards(warm) == _shards(cold)
    assert "backbone cache" in warm_facts["caching"]  # the report and summary say so
    assert "backbone cache" not in cold_facts["caching"]
    np.testing.assert_array_equal(
        _scores(tmp_path / "warm", split_dir), _scores(tmp_path / "cold", split_dir)
    )


def test_the_key_follows_what_the_extractor_computes(tmp_path):
    weights = imagenet_mobilenet()
    same = tmp_path / "same.weights.h5"
    shutil.copy(weights, same)
    changed = _one_byte_changed(weights, tmp_path / "changed.weights.h5")
    base = backbone_cache.key("MobileNet", str(weights), 48, 0)
    assert base == backbone_cache.key("MobileNet", str(same), 48, 0)  # content, not path
    assert base == backbone_cache.key("MobileNet", str(weights), 48, 1)  # seed: random only
    others = [
        backbone_cache.key("MobileNet", str(changed), 48, 0),
        backbone_cache.key("MobileNet", str(weights), 64, 0),
        backbone_cache.key("MobileNetV2", str(weights), 48, 0),
        backbone_cache.key("MobileNet", "none", 48, 0),
        backbone_cache.key("MobileNet", "none", 48, 1),
    ]
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        others.append(backbone_cache.key("MobileNet", str(weights), 48, 0))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert len({base, *others}) == 1 + len(others)
    for uncached in ("imagenet", "auto", str(tmp_path / "missing.h5")):
        assert backbone_cache.key("MobileNet", uncached, 48, 0) is None


def test_a_gcs_weights_file_is_keyed_by_its_checksum(tmp_path, bucket):
    weights = imagenet_mobilenet()
    changed = _one_byte_changed(weights, tmp_path / "changed.weights.h5")
    for name, source in (("a.h5", weights), ("b.h5", weights), ("c.h5", changed)):
        bucket.blob(f"weights/{name}").upload_from_filename(str(source))
    a, b, c = (backbone_cache.key("MobileNet", f"gs://{bucket.name}/weights/{n}", 48, 0)
               for n in ("a.h5", "b.h5", "c.h5"))  # fmt: skip
    assert a is not None and a == b and a != c
    assert backbone_cache.key("MobileNet", f"gs://{bucket.name}/weights/none.h5", 48, 0) is None


def _extract(split_dir: Path, out: Path, cache: str) -> dict:
    from shapes_pipeline.steps.extract import extract

    return extract(
        str(split_dir), str(out), group=0, groups=1, backbone="MobileNet",
        weights=str(imagenet_mobilenet()), image_size=48, batch_size=32, seed=0, cache=cache,
    )  # fmt: skip


def test_a_damaged_entry_is_named_and_built_around(split_dir, tmp_path, caplog):
    cache = tmp_path / "cache"
    _extract(split_dir, tmp_path / "first", str(cache))
    (entry,) = _entries(cache)
    (cache / entry / backbone_cache.SAVED_MODEL / "saved_model.pb").write_bytes(b"not a graph")
    with caplog.at_level(logging.WARNING):
        facts = _extract(split_dir, tmp_path / "again", str(cache))
    assert facts["backbone_cache"] == "built"
    assert str(cache / entry) in caplog.text and "cannot be loaded" in caplog.text
    assert _shards(tmp_path / "again") == _shards(tmp_path / "first")


def test_a_cache_that_cannot_be_written_is_named_and_the_run_goes_on(split_dir, tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"  # under a file: no folder can be made there
    with caplog.at_level(logging.WARNING):
        facts = _extract(split_dir, tmp_path / "features", str(cache))
    assert facts["backbone_cache"] == "built" and _shards(tmp_path / "features")
    assert f"cannot store {cache}" in caplog.text


def test_an_entry_is_never_replaced(tmp_path):
    """Two runs storing the same key: the first entry stays, the second run goes on."""
    weight = tf.Variable([1.0, 2.0, 3.0])
    traced = tf.function(
        lambda x: x * weight, input_signature=[tf.TensorSpec((None, 3), tf.float32)]
    )
    backbone_cache.store(str(tmp_path), "k", traced, 3, [])
    weight.assign([0.0, 0.0, 0.0])
    backbone_cache.store(str(tmp_path), "k", traced, 3, ["later"])
    entry = tmp_path / "k"
    assert json.loads((entry / backbone_cache.ENTRY).read_text())["warnings"] == []
    loaded = tf.saved_model.load(str(entry / backbone_cache.SAVED_MODEL))
    np.testing.assert_array_equal(loaded.features(tf.ones((1, 3))), [[1.0, 2.0, 3.0]])
    assert _entries(tmp_path) == ["k"]


def test_a_gcs_cache_is_stored_and_loaded_leaving_no_download_behind(
    split_dir, tmp_path, bucket, monkeypatch
):
    cache = f"gs://{bucket.name}/backbones"
    assert _extract(split_dir, tmp_path / "first", cache)["backbone_cache"] == "built"
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert _extract(split_dir, tmp_path / "again", cache)["backbone_cache"] == "loaded"
    assert _shards(tmp_path / "again") == _shards(tmp_path / "first")
    assert list((tmp_path / "tmp").iterdir()) == []
