"""Training: the model artifact, augmentation, fine-tuning, early stopping."""

import io
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from helpers import (
    ANY_ACCURACY,
    LEARNS,
    SERVING_SAMPLE,
    SMALL,
    feature_dirs,
    imagenet_mobilenet,
    split_images,
    train_args,
    train_model,
)
from PIL import Image

from shapes_pipeline.helpers import model, serving, settings, shards, tfrecord
from shapes_pipeline.helpers.backbone import augmenter, unfreeze_top
from shapes_pipeline.helpers.predictions import read as read_predictions
from shapes_pipeline.runners import parameters
from shapes_pipeline.steps.evaluate import evaluate
from shapes_pipeline.steps.train import fine_tune_schedule

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # trains, exports or starts a browser


def test_model_artifact_is_the_full_image_to_probabilities_model(trained, split_dir):
    assert {p.name for p in trained.iterdir()} == {
        "saved_model",
        "labels.txt",
        "history.json",
        "training.json",
        "logs",
    }
    assert {p.parent.name for p in (trained / "logs").rglob("events.out.tfevents.*")} == {
        "train",
        "validation",
    }
    predict, classes = serving.load(trained)
    assert classes == ["circles", "squares", "triangles"]
    files = split_images(split_dir)
    probabilities = predict(files)
    assert probabilities.shape == (len(files), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    facts = json.loads((trained / "training.json").read_text())
    assert facts["weights"] == str(imagenet_mobilenet()) and facts["backbone"] == "MobileNet"
    history = json.loads((trained / "history.json").read_text())
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_saved_model_gives_the_keras_models_probabilities_on_raw_pixels(tmp_path):
    """Preprocessing is inside the SavedModel: raw [0, 255] pixels in, the Keras output out."""
    keras.utils.set_random_seed(0)
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    features = model.feature_extractor(backbone, "VGG16", 32)
    head = model.head(features.output_shape[-1], 3)
    classify = model.compiled(lambda x: head(features(x, training=False), training=False), 32)
    signatures = serving.serving_signatures(classify, ["a", "b", "c"], head)
    serving.save(tmp_path / "m", signatures, head, ["a", "b", "c"], {}, {})
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    expected = model.classifier(features, head).predict(x, verbose=0)
    served = tf.saved_model.load(str(tmp_path / "m" / "saved_model" / "1"))
    got = served.signatures["predict_images"](images=tf.constant(x))
    np.testing.assert_allclose(got["probabilities"], expected, rtol=1e-5, atol=1e-6)
    assert [c.decode() for c in got["class"].numpy()] == ["abc"[i] for i in expected.argmax(1)]
    assert not np.allclose(expected, expected[:1])  # the inputs do matter


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "I;16"])
def test_served_model_takes_encoded_images_of_any_size_and_mode(trained, split_dir, mode):
    """``serving_default`` decodes and resizes inside: a client sends files as they are, and
    the same picture in another mode gets the probabilities it gets as an RGB PNG."""
    import io

    from PIL import Image

    source = io.BytesIO(split_images(split_dir)[0])
    grey = Image.open(source).convert("L").resize((90, 70))
    as_mode = {
        "RGBA": lambda: grey.convert("RGBA"),
        "L": lambda: grey,
        "P": lambda: grey.convert("P"),
        "I;16": lambda: Image.fromarray(np.asarray(grey, np.uint16) * 257),
    }[mode]()
    files = []
    for image in (grey.convert("RGB"), as_mode):
        encoded = io.BytesIO()
        image.save(encoded, format="PNG")
        files.append(encoded.getvalue())
    served = tf.saved_model.load(str(trained / "saved_model" / "1"))
    out = served.signatures["serving_default"](image_bytes=tf.constant(files))
    rgb, other = out["probabilities"].numpy()
    np.testing.assert_allclose(other, rgb, atol=1e-6)
    blank = served.signatures["serving_default"](image_bytes=tf.constant([_png_of_zeros()]))
    assert np.abs(blank["probabilities"].numpy()[0] - rgb).max() > 1e-3  # the pixels matter


def _png_of_zeros() -> bytes:
    import io

    from PIL import Image

    encoded = io.BytesIO()
    Image.new("RGB", (90, 70)).save(encoded, format="PNG")
    return encoded.getvalue()


def test_head_is_the_notebooks():
    head = model.head(576, 4)
    kinds = [(type(layer).__name__, getattr(layer, "units", None)) for layer in head.layers]
    assert kinds == [("Dense", 128), ("Dense", 64), ("Dense", 32), ("Dropout", None), ("Dense", 4)]
    assert head.layers[3].rate == 0.5
    assert head.layers[-1].activation.__name__ == "softmax"


def test_early_stopping_restores_the_best_epoch(split_dir, tmp_path):
    facts = train_model(split_dir, tmp_path / "m", epochs=60, patience=2, seed=0, **SMALL)
    assert facts["epochs_run"] <= facts["best_epoch"] + 2 < 60 + 2
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert len(history["loss"]) == facts["epochs_run"]


def test_augmenter_gives_new_images_of_the_same_size_and_repeats_with_its_seed():
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    first, again = augmenter(seed=0), augmenter(seed=0)
    views = [np.asarray(first(x, training=True)) for _ in range(2)]
    assert views[0].shape == x.shape
    assert not np.allclose(views[0], x) and not np.allclose(views[0], views[1])
    np.testing.assert_array_equal(views[0], np.asarray(again(x, training=True)))


def _layers(model: keras.Sequential) -> dict:
    return {type(layer).__name__: layer.get_config() for layer in model.layers}


def test_default_augmentation_is_mild_and_the_shapes_preset_keeps_strong_turns_and_flips():
    mild = _layers(augmenter(seed=0))
    assert "RandomFlip" not in mild  # a mirrored digit or letter is another one
    assert mild["RandomRotation"]["factor"][1] == pytest.approx(10 / 360)
    preset = yaml.safe_load((REPO / "presets" / "augment-shapes.yaml").read_text())
    parameters.check({**settings.defaults(), "data": "d", "registry": "r", **preset})
    shapes = {k.removeprefix("augment_"): v for k, v in preset.items() if k.startswith("augment_")}
    strong = _layers(augmenter(seed=0, settings=shapes))
    assert strong["RandomFlip"]["mode"] == "horizontal_and_vertical"
    assert strong["RandomRotation"]["factor"][1] == pytest.approx(0.5)
    assert "RandomContrast" not in strong  # 0 is off
    off = dict.fromkeys(shapes, 0) | {"flip_horizontal": False, "flip_vertical": False}
    assert augmenter(seed=0, settings=off).layers == []


def test_augmentation_extracts_a_fixed_number_of_views_per_training_image(split_dir, tmp_path):
    facts = train_model(
        split_dir, tmp_path / "m", epochs=2, patience=5, seed=0, augment=True, augment_views=2,
        **SMALL,
    )  # fmt: skip
    assert facts["augment"] and "and of 2 augmented views" in facts["caching"]
    index = json.loads((tmp_path / "m-features-0" / "features.json").read_text())
    counts = {s["split"]: s["count"] for s in index["shards"]}
    n = json.loads((split_dir / "split.json").read_text())["counts"]
    assert counts["train"] == 3 * sum(n["train"].values())
    assert counts["val"] == sum(n["val"].values()) and counts["test"] == sum(n["test"].values())


def test_fine_tuning_warms_up_over_an_epoch_then_decays_along_a_cosine():
    schedule = fine_tune_schedule(1e-4, steps_per_epoch=10, epochs=5)
    rate = [float(schedule(step)) for step in range(51)]
    assert rate[0] == 0.0 and rate[5] == pytest.approx(0.5e-4) and rate[10] == pytest.approx(1e-4)
    assert rate[30] == pytest.approx(0.5e-4, rel=1e-3)  # halfway through the decay
    assert rate[50] == pytest.approx(0.0, abs=1e-10)
    assert all(a >= b for a, b in zip(rate[10:], rate[11:], strict=False))


def test_unfreeze_top_leaves_batch_norm_frozen():
    backbone = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    assert unfreeze_top(backbone, 3) == 3
    trainable = [layer for layer in backbone.layers if layer.trainable and layer.weights]
    assert len(trainable) == 3
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert (
        trainable
        == [
            layer
            for layer in backbone.layers
            if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
        ][-3:]
    )


def test_fine_tuning_continues_the_history(split_dir, tmp_path):
    facts = train_model(
        split_dir, tmp_path / "m", epochs=2, patience=5, seed=0, fine_tune_layers=4,
        fine_tune_lr=1e-4, fine_tune_epochs=2, **SMALL,
    )  # fmt: skip
    assert facts["fine_tune_layers"] == 4 and facts["head_epochs"] == 2
    assert facts["epochs_run"] == 2 + facts["fine_tune_epochs"] == 4
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert len(history["val_loss"]) == 4


def test_mixed_precision_keeps_float32_probabilities(split_dir, tmp_path):
    """The GPU path's precision, run on the CPU: float16 compute, float32 output and weights."""
    try:
        facts = train_model(
            split_dir, tmp_path / "m", epochs=2, patience=5, seed=0, precision="mixed_float16",
            **SMALL,
        )  # fmt: skip
        predict, _ = serving.load(tmp_path / "m")
        probabilities = predict(split_images(split_dir)[:4])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert facts["precision"] == "mixed_float16"
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-3)


def _learns(split: Path, out: Path, **options) -> dict:
    """``train`` with the ``trained`` fixture's settings (so, with no options, its model)."""
    weights = str(imagenet_mobilenet())
    return train_model(
        split, out, epochs=5, patience=5, seed=0, weights=weights, **LEARNS, **options
    )


def _scores(model_dir: Path, split: Path) -> np.ndarray:
    predict, _ = serving.load(model_dir)
    return predict(split_images(split, "val") + split_images(split, "test"))


def test_training_only_the_head_builds_no_backbone(trained, split_dir, tmp_path, monkeypatch):
    """Without fine-tuning, train completes the serving model extract wrote: it does not
    build the backbone again, and the model is the one built and saved whole would be."""
    from shapes_pipeline.helpers import backbone
    from shapes_pipeline.steps.train import train

    monkeypatch.setattr(backbone, "build_backbone", lambda *a, **k: pytest.fail("built"))
    weights = str(imagenet_mobilenet())
    train(
        str(split_dir), feature_dirs(trained), str(tmp_path / "m"),
        **train_args(epochs=5, patience=5, seed=0, weights=weights, batch_size=32, **LEARNS),
    )  # fmt: skip
    np.testing.assert_array_equal(_scores(tmp_path / "m", split_dir), _scores(trained, split_dir))


def test_training_never_reads_the_test_split(trained, split_dir, tmp_path):
    """Test images replaced by noise: the same history, epoch for epoch, and the same model.
    So neither fitting nor early stopping looked at them."""
    noisy = tmp_path / "noisy"
    shutil.copytree(split_dir, noisy)
    _replace_test_images_with_noise(noisy)
    _learns(noisy, tmp_path / "m")
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert history == json.loads((trained / "history.json").read_text())
    val = split_images(split_dir, "val")
    np.testing.assert_array_equal(
        serving.load(tmp_path / "m")[0](val), serving.load(trained)[0](val)
    )


def _replace_test_images_with_noise(dataset_dir: Path) -> None:
    """Rewrites the test shards with noise images (same rows and labels, same index)."""
    rng = np.random.default_rng(0)
    index = shards.read_index(dataset_dir)
    for shard in index["shards"]:
        if shard["split"] != "test":
            continue
        path = dataset_dir / shard["file"]
        records = [r for b in shards.records(path, shard["bytes"], shards.parse_images, 64)
                   for r in zip(b["row"], b["label"], strict=True)]  # fmt: skip
        with tf.io.TFRecordWriter(str(path)) as writer:
            for row, label in records:
                noise = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(
                    noise, format="PNG"
                )
                writer.write(
                    tfrecord.example(image=[noise.getvalue()], label=[int(label)], row=[int(row)])
                )
        shard["bytes"] = path.stat().st_size
    (dataset_dir / shards.INDEX).write_text(json.dumps(index))


def test_fine_tuning_that_worsens_validation_gives_back_the_head_only_model(
    trained, split_dir, tmp_path
):
    facts = _learns(
        split_dir, tmp_path / "m", fine_tune_layers=3, fine_tune_lr=10.0, fine_tune_epochs=5
    )
    assert facts["fine_tune_kept"] is False
    np.testing.assert_array_equal(_scores(tmp_path / "m", split_dir), _scores(trained, split_dir))


def test_fine_tuning_that_improves_validation_is_kept(trained, split_dir, tmp_path):
    facts = _learns(
        split_dir, tmp_path / "m", fine_tune_layers=3, fine_tune_lr=1e-4, fine_tune_epochs=5
    )
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    head_only = history["val_loss"][: facts["head_epochs"]]
    assert min(history["val_loss"][facts["head_epochs"] :]) < min(head_only)
    assert facts["fine_tune_kept"] is True
    assert np.abs(_scores(tmp_path / "m", split_dir) - _scores(trained, split_dir)).max() > 1e-3
    # The backbone changed, so the extracted features are stale: evaluation scores every
    # test image through the served model instead (each row its own image's serving).
    result = evaluate(
        str(split_dir), feature_dirs(tmp_path / "m"), str(tmp_path / "m"),
        predictions_path=str(tmp_path / "p.csv"), report_path=str(tmp_path / "r.html"),
        evaluation_path=str(tmp_path / "e.json"),
        gate=ANY_ACCURACY, serving_sample=SERVING_SAMPLE,
    )  # fmt: skip
    assert result["serving_check"]["images"] == result["n_test"] == 9
    _, rows = read_predictions(str(tmp_path / "p.csv"))
    served = serving.load(tmp_path / "m")[0](split_images(split_dir))
    np.testing.assert_allclose(np.array(list(rows.values())), served, atol=1e-6)


def test_without_a_validation_split_training_runs_every_epoch_and_keeps_the_last(
    demo_data, tmp_path
):
    """val_fraction 0: no early stopping; the evaluation and its report say so."""
    from shapes_pipeline.steps.evaluate import evaluate
    from shapes_pipeline.steps.split import split_dataset

    split_dataset(
        str(demo_data), str(tmp_path / "ds"), seed=230, train_fraction=0.8, val_fraction=0
    )
    facts = train_model(tmp_path / "ds", tmp_path / "m", epochs=4, patience=1, seed=0, **SMALL)
    assert facts["early_stopping"] is False and facts["best_val_loss"] is None
    assert facts["epochs_run"] == facts["best_epoch"] == 4
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert set(history) == {"loss", "accuracy"} and len(history["loss"]) == 4
    evaluate(
        str(tmp_path / "ds"), feature_dirs(tmp_path / "m"), str(tmp_path / "m"),
        predictions_path=str(tmp_path / "p.csv"),
        report_path=str(tmp_path / "r.html"), evaluation_path=str(tmp_path / "e.json"),
        gate=ANY_ACCURACY, serving_sample=SERVING_SAMPLE,
    )  # fmt: skip
    assert (
        "no validation split, so no early stopping: ran 4 epochs"
        in (tmp_path / "r.html").read_text()
    )


def test_tensorboard_scalars_are_written_as_training_goes(tmp_path):
    """Each epoch's scalars are on disk when the next epoch starts, not only at the end."""
    from shapes_pipeline.helpers.fit import TensorBoardWriter, fit

    keras.utils.set_random_seed(0)
    head = model.head(8, 3, seed=0)
    x = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    y = np.arange(12) % 3
    writer = TensorBoardWriter(tmp_path / "logs")
    seen = []

    def on_epoch(epoch, values):
        writer(epoch, values)
        files = list((tmp_path / "logs" / "validation").glob("events.out.tfevents.*"))
        seen.append(sum(1 for _ in tf.data.TFRecordDataset([str(f) for f in files])))

    fit(head, (x, y), (x, y), epochs=3, batch_size=4, patience=5, seed=0, log=False,
        on_epoch=on_epoch)  # fmt: skip
    writer.close()
    # one file-version record, then two scalars (loss, accuracy) per epoch
    assert seen == [3, 5, 7]
