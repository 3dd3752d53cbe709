"""Evaluation: every prediction is scored against its own image's label, never a neighbour's."""

import csv
import json
import random

import keras
import numpy as np
import pytest
from PIL import Image

from components import model
from components.dataset import MANIFEST, read_manifest, write_manifest
from components.evaluate import evaluate
from components.split import split_dataset

COLOURS = {
    "blue": (0, 0, 255),
    "green": (0, 255, 0),
    "red": (255, 0, 0),
}  # sorted: blue, green, red


@pytest.fixture
def colour_data(tmp_path):
    """A data set whose class is the dominant colour, and an oracle model that reads it."""
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (tmp_path / "src" / name).mkdir(parents=True)
        for i in range(20):
            pixels = np.clip(np.array(rgb) * 0.7 + rng.integers(0, 60, (28, 28, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "src" / name / f"{i:02d}.png")
    split_dataset(
        str(tmp_path / "src"), str(tmp_path / "ds"), seed=230, train_fraction=0.8, val_fraction=0.1
    )

    inputs = keras.Input((32, 32, 3))
    dense = keras.layers.Dense(3, activation="softmax")
    oracle = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    channel_of_class = [2, 1, 0]  # blue, green, red
    kernel = np.zeros((3, 3), np.float32)
    for cls, channel in enumerate(channel_of_class):
        kernel[channel, cls] = 0.1
    dense.set_weights([kernel, np.zeros(3, np.float32)])
    facts = {
        "backbone": "oracle",
        "weights": "none",
        "image_size": 32,
        "epochs_run": 1,
        "best_epoch": 1,
        "head_epochs": 1,
        "caching": "features of each image, computed once",
        "devices": ["/physical_device:CPU:0"],
        "precision": "float32",
        "warnings": ["a test warning"],
    }
    history = {"loss": [1.0], "val_loss": [1.0], "accuracy": [0.5], "val_accuracy": [0.5]}
    classify = model.compiled(lambda x: oracle(x, training=False), 32)
    model.save(tmp_path / "model", classify, list(COLOURS), history, facts)
    return tmp_path


def _evaluate(root):
    result = evaluate(
        str(root / "ds"),
        str(root / "model"),
        predictions_path=str(root / "predictions.csv"),
        report_path=str(root / "report.html"),
        evaluation_path=str(root / "evaluation.json"),
    )
    with open(root / "predictions.csv") as f:
        return result, list(csv.DictReader(f))


def test_predictions_are_aligned_with_their_labels(colour_data):
    result, rows = _evaluate(colour_data)
    test = [e for e in read_manifest(colour_data / "ds") if e.split == "test"]
    assert [r["path"] for r in rows] == [e.path for e in test]
    assert [r["true_class"] for r in rows] == [e.label for e in test]
    assert all(r["path"].split("/")[1] == r["true_class"] == r["predicted_class"] for r in rows)
    assert result["test_accuracy"] == 1.0
    assert result["confusion_matrix"] == [[4, 0, 0], [0, 4, 0], [0, 0, 4]]
    assert result["classification_report"]["red"]["recall"] == 1.0
    for r in rows:
        probabilities = [float(r[f"p_{c}"]) for c in COLOURS]
        assert max(probabilities) == float(r[f"p_{r['predicted_class']}"])


def test_alignment_does_not_depend_on_file_order(colour_data):
    """Shuffle the manifest (as a shuffling loader would the images): still every label matches."""
    examples = read_manifest(colour_data / "ds")
    random.Random(3).shuffle(examples)
    write_manifest(examples, colour_data / "ds")
    result, rows = _evaluate(colour_data)
    assert result["test_accuracy"] == 1.0
    assert [r["path"] for r in rows] == [e.path for e in examples if e.split == "test"]
    assert (colour_data / "ds" / MANIFEST).exists()


def test_report_and_evaluation_files(colour_data):
    result, _ = _evaluate(colour_data)
    page = (colour_data / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2
    assert "1.0000" in page and "WARNING: a test warning" in page
    for name in COLOURS:
        assert f"<td>{name}</td>" in page
    stored = json.loads((colour_data / "evaluation.json").read_text())
    assert stored == json.loads(json.dumps(result))
    assert stored["warnings"] == ["a test warning"]
