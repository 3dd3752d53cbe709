"""Evaluation: every prediction is scored against its own image's label, never a neighbour's."""

import csv
import json
import random
import shutil
from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    assert_varied,
    evaluate_oracle,
    images_by_path,
    save_oracle,
    save_oracle_features,
)
from PIL import Image

from shapes_pipeline.helpers import shards
from shapes_pipeline.helpers.dataset import read_manifest, write_manifest
from shapes_pipeline.helpers.report import MAX_WRONG, Example, gallery, shown
from shapes_pipeline.steps.evaluate import (
    ConsistencyError,
    check_consistency,
    decide,
    stratified_sample,
    wilson_interval,
)
from shapes_pipeline.steps.split import split_dataset

COLOURS = {
    "blue": (0, 0, 255),
    "green": (0, 255, 0),
    "red": (255, 0, 0),
}  # sorted: blue, green, red
ORACLE_GAIN = 0.02  # small enough that no probability saturates at 1.0


@pytest.fixture
def colour_data(tmp_path):
    """A data set whose class is the dominant colour, and an oracle model that reads it.

    Every image has its own brightness, so the oracle's probabilities differ from image to
    image, within a class too: a check that compared one image's row with another's fails.
    """
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (tmp_path / "src" / name).mkdir(parents=True)
        for i in range(20):
            brightness = 0.3 + 0.035 * i
            noise = rng.integers(0, 60, (28, 28, 3))
            pixels = np.clip(np.array(rgb) * brightness + noise, 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "src" / name / f"{i:02d}.png")
    split_dataset(
        str(tmp_path / "src"), str(tmp_path / "ds"), seed=230, train_fraction=0.8, val_fraction=0.1
    )

    channel_of_class = [2, 1, 0]  # blue, green, red
    kernel = np.zeros((3, 3), np.float32)
    for cls, channel in enumerate(channel_of_class):
        kernel[channel, cls] = ORACLE_GAIN
    save_oracle(tmp_path / "model", kernel, np.zeros(3, np.float32), list(COLOURS))
    save_oracle_features(tmp_path / "ds", tmp_path / "features")
    return tmp_path


def _evaluate(root, model_dir="model", **gate):
    result = evaluate_oracle(root, model_dir, **gate)
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


def test_each_prediction_is_its_own_images_score(colour_data):
    """Every row of predictions.csv is what the served model gives that image alone."""
    result, rows = _evaluate(colour_data)
    served = tf.saved_model.load(str(colour_data / "model" / "saved_model" / "1"))
    images = images_by_path(colour_data / "ds")
    alone = [
        served.signatures["serving_default"](image_bytes=tf.constant([images[r["path"]]]))[
            "probabilities"
        ].numpy()[0]
        for r in rows
    ]
    written = np.array([[float(r[f"p_{c}"]) for c in COLOURS] for r in rows])
    assert_varied(written)  # so two rows swapped, even of one class, would fail below
    np.testing.assert_allclose(written, alone, atol=2e-6)
    assert result["serving_check"]["images"] == 12 and result["serving_check"]["tolerance"] == 1e-4


def test_alignment_does_not_depend_on_record_order(colour_data):
    """Feature records in another order (as another grouping of shards would give): the
    same predictions, each on its own row."""
    _, before = _evaluate(colour_data)
    for path in (colour_data / "features").glob("*.tfrecord"):
        records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
        random.Random(3).shuffle(records)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in records:
                writer.write(record)
    result, after = _evaluate(colour_data)
    assert result["test_accuracy"] == 1.0 and after == before


def test_a_manifest_that_does_not_match_the_shards_is_refused(colour_data):
    """Rows reordered in the manifest: the shards' rows now carry other labels. No report."""
    examples = read_manifest(colour_data / "ds")
    random.Random(3).shuffle(examples)
    write_manifest(examples, colour_data / "ds")
    with pytest.raises(ConsistencyError, match="not the manifest's test rows"):
        _evaluate(colour_data)
    assert not (colour_data / "report.html").exists()


def test_a_manifest_whose_labels_differ_from_the_shards_is_refused(colour_data):
    """The same test rows, but two of them with their classes swapped in the manifest: the
    shards' labels disagree, so no report is written rather than one scored on wrong labels."""
    examples = read_manifest(colour_data / "ds")
    test = [i for i, e in enumerate(examples) if e.split == "test"]
    a = test[0]
    b = next(i for i in test if examples[i].label != examples[a].label)
    examples[a], examples[b] = (
        replace(examples[a], label=examples[b].label),
        replace(examples[b], label=examples[a].label),
    )
    write_manifest(examples, colour_data / "ds")
    with pytest.raises(ConsistencyError, match="not the manifest's test rows"):
        _evaluate(colour_data)
    assert not (colour_data / "report.html").exists()


def test_serving_that_differs_from_the_features_path_is_refused(colour_data):
    """Features that are not what the served model computes (here, every mean colour 1%
    brighter): the sampled serving check names the image; no report is written."""
    for path in (colour_data / "features").glob("*.tfrecord"):
        parse = shards.parse_features("float32", 3)
        batches = list(tf.data.TFRecordDataset(str(path)).batch(100).map(parse).as_numpy_iterator())
        with tf.io.TFRecordWriter(str(path)) as writer:
            for b in batches:
                for f, label, row in zip(b["features"], b["label"], b["row"], strict=True):
                    writer.write(shards.feature_example((f * 1.01).tobytes(), label, row, 0))
    with pytest.raises(ConsistencyError, match=r"test/\w+/\d+\.png: serving_default gives"):
        _evaluate(colour_data)
    assert not (colour_data / "report.html").exists()


def test_report_and_evaluation_files(colour_data):
    result, _ = _evaluate(colour_data)
    page = (colour_data / "report.html").read_text()
    # three figures (confusion counts, row-normalised, curves) and 12 correct thumbnails
    assert page.count('src="data:image/png;base64,') == 3 + 12
    assert "1.0000 (95% CI 0.758-1.000, Wilson)" in page and "WARNING: a test warning" in page
    assert "Misclassified: 0 shown of 0, of 12" in page and str(colour_data / "src") in page
    for name in COLOURS:
        assert f"<td>{name}</td>" in page
    stored = json.loads((colour_data / "evaluation.json").read_text())
    assert stored == json.loads(json.dumps(result))
    assert stored["warnings"] == ["a test warning"]
    summary = (colour_data / "summary.md").read_text()
    assert "Test accuracy: **1.0000 (95% CI 0.758-1.000, Wilson)**" in summary
    assert "| red | 1.000 | 1.000 | 1.000 | 4 |" in summary


def test_wilson_interval():
    assert wilson_interval(12, 12) == pytest.approx((0.7575, 1.0), abs=1e-4)
    low, high = wilson_interval(51, 60)
    assert low < 51 / 60 < high and high - low == pytest.approx(0.18, abs=0.01)


def test_gallery_shows_every_mistake_and_a_sample_of_correct_ones(colour_data):
    image = next((colour_data / "src" / "red").iterdir()).read_bytes()
    examples = [Example("test/red/a.png", "red", "blue", 0.6, image)] * 2 + [
        Example("test/red/b.png", "red", "red", 0.9, image)
    ] * 30
    page = gallery(examples, *shown(examples))
    assert page.count('class="wrong"') == 2 and page.count('class="ok"') == 12
    assert "Misclassified: 2 shown of 2, of 32" in page and "predicted: blue (60%)" in page


def test_gallery_of_a_large_test_split_shows_a_bounded_sample_of_mistakes():
    examples = [Example(f"test/a/{i}.png", "a", "b", 0.6) for i in range(5000)]
    wrong, right = shown(examples)
    assert len(wrong) == MAX_WRONG and right == []
    assert wrong[0].path == "test/a/0.png" and wrong[-1].path == "test/a/4999.png"


def _checked(colour_data, edit_evaluation=None, edit_rows=None):
    _evaluate(colour_data)
    evaluation = json.loads((colour_data / "evaluation.json").read_text())
    (edit_evaluation or (lambda e: None))(evaluation)
    path = colour_data / "predictions.csv"
    with open(path) as f:
        rows = list(csv.reader(f))
    rows = (edit_rows or (lambda r: r))(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    test = [e for e in read_manifest(colour_data / "ds") if e.split == "test"]
    check_consistency(evaluation, test, str(path))


@pytest.mark.parametrize(
    "edit_evaluation, edit_rows, message",
    [
        (lambda e: e.update(test_accuracy=0.5), None, "not the confusion matrix's 12/12"),
        (
            lambda e: e["classification_report"]["red"].update(support=5),
            None,
            "class red: support 5 but the manifest has 4",
        ),
        (None, lambda rows: [*rows, rows[1]], "twice: test/"),
        (None, lambda rows: rows[:-1], "missing: test/"),
    ],
    ids=["accuracy", "support", "twice", "missing"],
)
def test_inconsistent_evaluation_is_an_error(colour_data, edit_evaluation, edit_rows, message):
    _checked(colour_data)  # as written by evaluate: consistent
    with pytest.raises(ConsistencyError, match=message):
        _checked(colour_data, edit_evaluation, edit_rows)


@pytest.mark.parametrize(
    "accuracy, champion, passed, reason",
    [
        (0.85, None, False, "below min_accuracy 0.9"),
        (0.95, None, True, "no production model yet"),
        (0.95, {"uri": "reg/m/v1", "accuracy": 0.97}, False, "worse than the production"),
        (0.95, {"uri": "reg/m/v1", "accuracy": 0.96}, True, "within max_regression 0.01"),
        (0.95, {"uri": "reg/m/v1", "accuracy": None, "classes": None}, True, "cannot be"),
    ],
)
def test_gate_decision(accuracy, champion, passed, reason):
    decision = decide(accuracy, min_accuracy=0.9, max_regression=0.01, champion=champion)
    assert decision[0] is passed and reason in decision[1]


def test_champion_is_scored_on_this_runs_test_images(colour_data):
    """The registry's production model (the perfect oracle) blocks a worse challenger."""
    version = colour_data / "reg" / "shapes-classifier" / "v1"
    shutil.copytree(colour_data / "model", version)
    (version.parent / "LATEST").write_text("v1\n")
    kernel = np.zeros((3, 3), np.float32)
    kernel[2, 0] = kernel[1, 1] = kernel[1, 2] = ORACLE_GAIN  # reads no red: red always wrong
    save_oracle(colour_data / "worse", kernel, np.zeros(3, np.float32), list(COLOURS))

    gate = {"registry_uri": str(colour_data / "reg"), "min_accuracy": 0.5}
    result, _ = _evaluate(colour_data, "worse", **gate)
    assert result["test_accuracy"] == pytest.approx(8 / 12)
    assert result["gate"]["champion_uri"] == str(version)
    assert result["gate"]["champion_accuracy"] == 1.0
    assert not result["gate"]["passed"] and "worse than the production" in result["gate"]["reason"]
    assert "Gate BLOCKED (not exported)" in (colour_data / "report.html").read_text()

    result, _ = _evaluate(colour_data, "model", **gate)
    assert result["gate"]["passed"] and result["gate"]["champion_accuracy"] == 1.0
    assert result["gate"]["compared_images"] == 12 and not result["gate"]["compared_sampled"]


def test_the_champion_on_a_large_test_split_is_scored_on_a_stratified_sample(colour_data):
    """gate_sample below the test split: both models are compared on the same stratified
    sample (each class in its share), and the report says so."""
    version = colour_data / "reg" / "shapes-classifier" / "v1"
    shutil.copytree(colour_data / "model", version)
    (version.parent / "LATEST").write_text("v1\n")
    kernel = np.zeros((3, 3), np.float32)
    kernel[2, 0] = kernel[1, 1] = kernel[1, 2] = ORACLE_GAIN  # red always wrong
    save_oracle(colour_data / "worse", kernel, np.zeros(3, np.float32), list(COLOURS))
    gate = {"registry_uri": str(colour_data / "reg"), "min_accuracy": 0.5, "gate_sample": 6}
    result, _ = _evaluate(colour_data, "worse", **gate)
    assert result["gate"]["compared_images"] == 6 and result["gate"]["compared_sampled"]
    assert result["gate"]["challenger_accuracy"] == pytest.approx(4 / 6)  # 2 per class
    assert result["gate"]["champion_accuracy"] == 1.0 and not result["gate"]["passed"]
    assert "on a sample of 6 test images is worse" in result["gate"]["reason"]
    assert "a stratified sample of 6 test images" in (colour_data / "report.html").read_text()


def test_stratified_sample_keeps_each_class_share():
    labels = np.array([0] * 600 + [1] * 300 + [2] * 100)
    chosen = stratified_sample(labels, 100, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [60, 30, 10]
    assert len(set(chosen.tolist())) == 100
    np.testing.assert_array_equal(chosen, stratified_sample(labels, 100, seed=0))
    assert len(stratified_sample(labels, 5000)) == 1000


def test_a_model_with_other_classes_does_not_replace_production_by_default(colour_data):
    """Production knows blue and green only; this model adds red. Refused, unless the
    user allows the change; the report and the gate say which classes changed."""
    version = colour_data / "reg" / "shapes-classifier" / "v1"
    kernel = np.zeros((3, 2), np.float32)
    kernel[2, 0] = kernel[1, 1] = ORACLE_GAIN
    save_oracle(version, kernel, np.zeros(2, np.float32), ["blue", "green"])
    (version.parent / "LATEST").write_text("v1\n")
    gate = {"registry_uri": str(colour_data / "reg"), "min_accuracy": 0.5}
    result, _ = _evaluate(colour_data, **gate)
    assert result["test_accuracy"] == 1.0 and not result["gate"]["passed"]
    assert (result["gate"]["classes_added"], result["gate"]["classes_lost"]) == (["red"], [])
    assert "has other classes (classes added ['red'], lost none)" in result["gate"]["reason"]
    assert "Classes added: red; lost: none." in (colour_data / "report.html").read_text()
    result, _ = _evaluate(colour_data, **gate, allow_class_change=True)
    assert result["gate"]["passed"] and "allow_class_change permits" in result["gate"]["reason"]
