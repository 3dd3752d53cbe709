"""The serving SavedModel: the backbone's weights packed into one variable, and the model
train completes from extract's: the trained head's weights in the checkpoint of a model
whose graph was saved with an untrained head."""

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from shapes_pipeline.helpers import model, serving
from shapes_pipeline.helpers.step import InputError

SIZE = 32
CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def network():
    """A small random backbone's feature extractor, traced; an untrained head on it."""
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)
    )
    features = model.feature_extractor(backbone, "MobileNetV3Small", SIZE)
    traced = model.compiled(model.packed(features), SIZE)
    head = model.head(features.output_shape[-1], len(CLASSES), seed=0)
    return traced, head, features


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")
    return encoded.getvalue()


def _trained_weights(head: keras.Model) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.normal(0, 0.3, w.shape).astype(np.float32) for w in head.get_weights()]


def _outputs(saved_model) -> dict[str, np.ndarray]:
    loaded = tf.saved_model.load(str(saved_model))
    images = tf.constant([_png(seed) for seed in range(4)])
    pixels = tf.random.stateless_uniform((4, SIZE, SIZE, 3), (2, 3), maxval=255.0)
    features = tf.random.stateless_uniform((4, 576), (4, 5), maxval=3.0)
    signatures = loaded.signatures
    return {
        "serving_default": signatures["serving_default"](image_bytes=images)["probabilities"],
        "predict_images": signatures["predict_images"](images=pixels)["probabilities"],
        "predict_features": signatures["predict_features"](features=features)["probabilities"],
    }


def test_a_template_with_the_trained_head_is_the_model_saved_with_it(network, tmp_path):
    """Every signature of the completed template gives exactly what the model saved whole
    after training gives, and not what the untrained template gives."""
    traced, head, _ = network
    untrained = head.get_weights()
    serving.write_saved_model(
        tmp_path / "template", serving.signatures_of(traced, head, CLASSES), head
    )
    trained = _trained_weights(head)
    serving.save_with_head(tmp_path / "template", tmp_path / "completed", trained, CLASSES, {}, {})
    head.set_weights(trained)
    try:
        serving.save(
            tmp_path / "whole", serving.signatures_of(traced, head, CLASSES), head, CLASSES, {}, {}
        )
    finally:
        head.set_weights(untrained)
    completed = _outputs(tmp_path / "completed" / "saved_model" / "1")
    whole = _outputs(tmp_path / "whole" / "saved_model" / "1")
    template = _outputs(tmp_path / "template")
    for name in whole:
        np.testing.assert_array_equal(completed[name], whole[name], err_msg=name)
        assert np.abs(np.asarray(template[name]) - np.asarray(whole[name])).max() > 1e-3, name
    assert (tmp_path / "completed" / "labels.txt").read_text() == "a\nb\nc\n"


def test_tf_servings_loader_restores_the_trained_head(network, tmp_path):
    """TF Serving restores variables through the SavedModel's saver (its restore function),
    as TensorFlow 1's loader does: it must find the trained head in the new checkpoint."""
    traced, head, _ = network
    serving.write_saved_model(
        tmp_path / "template", serving.signatures_of(traced, head, CLASSES), head
    )
    trained = _trained_weights(head)
    serving.save_with_head(tmp_path / "template", tmp_path / "m", trained, CLASSES, {}, {})
    export_dir = str(tmp_path / "m" / "saved_model" / "1")
    images = [_png(seed) for seed in range(4)]
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
        signature = meta_graph.signature_def["serving_default"]
        got = session.run(
            signature.outputs["probabilities"].name,
            {signature.inputs["image_bytes"].name: images},
        )
    loaded = tf.saved_model.load(export_dir)
    expected = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
    np.testing.assert_allclose(got, expected["probabilities"], atol=1e-6)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.saved_model.loader.load(session, ["serve"], str(tmp_path / "template"))
        untrained = session.run(signature.outputs["probabilities"].name,
                                {signature.inputs["image_bytes"].name: images})  # fmt: skip
    assert np.abs(untrained - got).max() > 1e-3


def test_a_head_of_another_shape_is_refused_naming_the_template(network, tmp_path):
    traced, head, _ = network
    serving.write_saved_model(
        tmp_path / "template", serving.signatures_of(traced, head, CLASSES), head
    )
    other = model.head(576, 4)  # four classes, not three
    with pytest.raises(InputError, match=r"template: its head's weights .* are not the trained"):
        serving.save_with_head(
            tmp_path / "template", tmp_path / "m", other.get_weights(), [], {}, {}
        )
    assert not (tmp_path / "m").exists()


def test_the_packed_backbone_is_the_network_and_saves_as_one_variable(network, tmp_path):
    """Served from one variable, the backbone gives exactly the network's features, in a
    SavedModel whose checkpoint holds that variable and the head's, not one per weight."""
    traced, head, features = network
    pixels = tf.random.stateless_uniform((5, SIZE, SIZE, 3), (6, 7), maxval=255.0)
    expected = model.compiled(lambda x: features(x, training=False), SIZE)(pixels).numpy()
    np.testing.assert_array_equal(traced(pixels).numpy(), expected)
    assert not np.allclose(expected, expected[:1], rtol=1e-2, atol=0)  # the images matter
    serving.write_saved_model(tmp_path / "m", serving.signatures_of(traced, head, CLASSES), head)
    keys = tf.train.load_checkpoint(str(tmp_path / "m" / "variables" / "variables"))
    saved = sorted(
        k for k in keys.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"
    )
    assert len(features.weights) > 100 and len(saved) == 1 + len(head.weights), saved
