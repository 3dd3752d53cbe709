"""The backbone: its weights from every source, and the settings a device gets."""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import upload_folder

from components.backbone import (
    SKIPSET_KEY,
    WeightsError,
    build_backbone,
    devices,
    variables_share_kernels,
)


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


def test_backbone_variables_reach_tensorflow_without_their_names(monkeypatch):
    """TensorFlow keeps a kernel per set of VarHandleOp attributes and names each op after
    its variable, so every variable of a backbone would make a kernel; build_backbone's
    reach the op without the name. Fails when TensorFlow stops naming them (then remove
    backbone.variables_share_kernels) or creates variables another way."""
    from tensorflow.python.ops import gen_resource_variable_ops as ops

    names = []
    real = ops.var_handle_op

    def spy(*args, **kwargs):
        names.append(kwargs.get("debug_name", ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, "var_handle_op", spy)
    tf.Variable(1.0, name="plain")
    assert names == ["plain/"], "TensorFlow no longer names VarHandleOps after variables"
    names.clear()
    net, _, _ = build_backbone("MobileNetV3Small", "none", 32)
    assert len(names) == len(net.weights) > 100
    assert not any(names)
    assert ops.var_handle_op is spy  # put back once the backbone is built


def test_two_threads_building_at_once_leave_tensorflow_as_it_was():
    """The second thread waits for the first to put TensorFlow's function back; if both
    swapped it at once, the one leaving last would put back the other's swap, for good."""
    from tensorflow.python.ops import gen_resource_variable_ops as ops

    real = ops.var_handle_op
    inside, first_left = threading.Event(), threading.Event()

    def second() -> None:
        with variables_share_kernels():
            inside.set()
            first_left.wait(10)

    with variables_share_kernels():
        thread = threading.Thread(target=second)
        thread.start()
        inside.wait(1)  # it would be in by now, were it not kept out
    first_left.set()
    thread.join()
    assert inside.is_set()
    assert ops.var_handle_op is real


def test_loading_a_weights_file_computes_keras_skipsets_once(weights_file):
    """Keras' loader looks the attributes it skips up under a name it never stores them
    under, so it builds a throwaway Layer for every layer it loads; build_backbone stores
    them where Keras looks. Fails when Keras changes either name."""
    from keras.src.backend.common import global_state
    from keras.src.saving import saving_lib

    for kind in ("Layer", "Functional", "Sequential"):
        global_state.set_global_attribute(SKIPSET_KEY.format(kind), None)
    skipset = saving_lib.get_attr_skipset
    assert skipset("Layer") is not skipset("Layer"), (
        "Keras keeps its skipsets itself now: remove backbone.cache_keras_skipsets"
    )
    build_backbone("MobileNetV3Small", str(weights_file[0]), 32)
    kept = skipset("Layer")
    assert kept is skipset("Layer") and skipset("Functional") is skipset("Functional")
    global_state.set_global_attribute(SKIPSET_KEY.format("Layer"), None)
    assert skipset("Layer") == kept  # Keras' own set, kept where it looks


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
def test_on_a_cpu_auto_precision_is_float32_and_grappler_is_off():
    """What was measured on this CPU: grappler's rewrites cost a network's first call time
    and bought nothing per batch after it (docs/benchmarks.md)."""
    options = tf.config.optimizer.get_experimental_options()
    try:
        devices()
        assert keras.mixed_precision.global_policy().name == "float32"
        assert tf.config.optimizer.get_experimental_options()["disable_meta_optimizer"]
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": options.get("disable_meta_optimizer", False)}
        )
