"""Cached features give the same training as the notebook's way (backbone inside every step)."""

import keras
import numpy as np
import pytest

from shapes_pipeline.helpers import model
from shapes_pipeline.helpers.fit import fit
from shapes_pipeline.helpers.shards import load_pixels


@pytest.fixture(scope="module")
def frozen(split_dir):
    """VGG16: randomly initialised, it still gives varied features (deep nets with batch norm,
    MobileNets included, give features near 1e-11, on which a test of training proves little).
    """
    keras.utils.set_random_seed(0)
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    backbone.trainable = False
    extractor = model.feature_extractor(backbone, "VGG16", 32)
    data = {s: load_pixels(split_dir, s, 32) for s in ("train", "val")}
    return extractor, data


def test_cached_training_equals_the_notebooks_way(frozen):
    extractor, data = frozen
    n_features = extractor.output_shape[-1]
    cached_head = model.head(n_features, 3, seed=1)
    notebook_head = model.head(n_features, 3, seed=1)
    notebook_head.set_weights(cached_head.get_weights())
    settings = {"epochs": 4, "batch_size": 8, "patience": 10, "seed": 3, "log": False}

    initial = cached_head.get_weights()
    features = {s: (extractor.predict(x, verbose=0), y) for s, (x, y) in data.items()}
    cached = fit(cached_head, features["train"], features["val"], **settings)
    whole = model.classifier(extractor, notebook_head)
    assert len(whole.trainable_variables) == len(notebook_head.trainable_variables)
    notebook = fit(whole, data["train"], data["val"], **settings)

    assert len(cached["loss"]) == 4
    for name in cached:
        np.testing.assert_allclose(cached[name], notebook[name], rtol=1e-4, atol=1e-6)
    for a, b in zip(cached_head.get_weights(), notebook_head.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    change = np.abs(cached_head.get_weights()[0] - initial[0]).max()
    assert change > 1e-3  # it did train: equal weights are not just the initial ones


def test_early_stopping_keeps_the_best_epoch(frozen):
    extractor, data = frozen
    features = {s: (extractor.predict(x, verbose=0), y) for s, (x, y) in data.items()}
    head = model.head(extractor.output_shape[-1], 3, seed=0)
    history = fit(
        head,
        features["train"],
        features["val"],
        epochs=200,
        batch_size=8,
        patience=3,
        seed=0,
        log=False,
    )
    best = int(np.argmin(history["val_loss"]))
    assert len(history["val_loss"]) == best + 1 + 3 < 200
    restored = keras.losses.SparseCategoricalCrossentropy()(
        features["val"][1], head(features["val"][0])
    )
    assert float(restored) == pytest.approx(history["val_loss"][best], rel=1e-5)
