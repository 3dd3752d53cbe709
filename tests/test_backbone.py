"""The backbone: its weights from every source, and the settings a device gets."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import upload_folder

from shapes_pipeline.helpers.backbone import WeightsError, build_backbone, devices


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """Weights of MobileNetV3Small without its top, saved as ../shared/weights/ is."""
    keras.utils.set_random_seed(7)
    net = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    path = tmp_path_factory.mktemp("w") / "small_notop.weights.h5"
    net.save_weights(path)
    return path, net.get_weights()


def test_weights_from_a_local_file(weights_file):
    path, expected = weights_file
    net, used, warnings = build_backbone("MobileNetV3Small", str(path), 32)
    assert used == str(path) and warnings == []
    for got, want in zip(net.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_weights_from_gcs(weights_file, bucket):
    path, expected = weights_file
    uri = upload_folder(bucket, path.parent, "weights") + f"/{path.name}"
    net, used, _ = build_backbone("MobileNetV3Small", uri, 32)
    assert used == uri
    np.testing.assert_array_equal(net.get_weights()[0], expected[0])


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="nope.weights.h5"):
        build_backbone("MobileNetV3Small", str(tmp_path / "nope.weights.h5"), 32)


def test_auto_falls_back_loudly_when_imagenet_cannot_be_had():
    net, used, warnings = build_backbone("MobileNetV3Small", "auto", 32)
    assert used == "none"
    assert len(warnings) == 1 and "RANDOMLY INITIALISED" in warnings[0]
    with pytest.raises(WeightsError, match="weights=imagenet"):
        build_backbone("MobileNetV3Small", "imagenet", 32)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="NoSuchNet"):
        build_backbone("NoSuchNet", "none", 32)


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a CPU's settings")
def test_on_a_cpu_auto_precision_is_float32():
    """Mixed precision only slows a CPU down; ``auto`` means it on a GPU alone."""
    devices()
    assert keras.mixed_precision.global_policy().name == "float32"
