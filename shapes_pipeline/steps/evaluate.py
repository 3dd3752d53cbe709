"""Step 4: score the model on the test split, which training never saw.

What is scored is the SavedModel that export publishes, loaded as serving loads it: every
test image through its ``predict_features`` signature (the head) from the features extract
wrote, so the cost does not grow with the backbone; and a stratified sample fed as a
client would send it, encoded bytes through ``serving_default``, which must give the same
probabilities within 1e-4. That sample is the proof that serving equals evaluation.

Every prediction carries its manifest row, and predictions are put in manifest order, with
the label the manifest gives and the feature shard's label checked to agree, so every
prediction is compared with its own label (the notebook's shuffled test generator broke
exactly this and reported 0.30 for a model that scored 1.000).
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from shapes_pipeline.helpers import (
    artifact,
    dataset,
    predictions,
    registry,
    report,
    serving,
    shards,
)
from shapes_pipeline.helpers import backbone as nets
from shapes_pipeline.helpers.facts import Evaluation, Gate
from shapes_pipeline.helpers.settings import GateSettings
from shapes_pipeline.helpers.step import InputError, lap
from shapes_pipeline.steps import split
from shapes_pipeline.steps.scoring import score_champion, score_images

TOLERANCE = 1e-4  # serving_default against the evaluation, per probability


class ConsistencyError(InputError):
    """The evaluation contradicts itself or the manifest: no report is better than a wrong one."""


def wilson_interval(correct: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy (sound for small test sets and near 1.0)."""
    interval = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def stratified_sample(labels: np.ndarray, most: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``most`` of ``labels``, each class in its share (at least one),
    chosen by ``seed``; all of them if there are no more than ``most``."""
    if len(labels) <= most:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = max(1, most * len(members) // len(labels))
        chosen.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(chosen))


def class_change(classes: list[str], champion: dict | None) -> tuple[list[str], list[str]]:
    """The classes this model adds to, and loses from, the production model's."""
    if not champion or champion["classes"] is None:
        return [], []
    return sorted(set(classes) - set(champion["classes"])), sorted(
        set(champion["classes"]) - set(classes)
    )


def decide(
    accuracy: float,
    min_accuracy: float,
    max_regression: float,
    champion: dict | None,
    change: tuple[list[str], list[str]] = ([], []),
    allow_class_change: bool = False,
) -> tuple[bool, str]:
    """The gate: at least ``min_accuracy``, and (where there is a production model with the
    same classes) not worse than it by more than ``max_regression`` on the same images. A
    model whose classes differ from production's (``change``: added, lost) replaces it only
    with ``allow_class_change``."""
    if accuracy < min_accuracy:
        return False, f"test accuracy {accuracy:.4f} is below min_accuracy {min_accuracy}"
    if champion is None:
        return True, f"no production model yet; test accuracy {accuracy:.4f} >= {min_accuracy}"
    added, lost = change
    if added or lost:
        what = f"classes added {added or 'none'}, lost {lost or 'none'}"
        if not allow_class_change:
            return False, (
                f"the production model {champion['uri']} has other classes ({what}); "
                "allow_class_change lets this model replace it"
            )
        return True, (
            f"the classes change ({what}), which allow_class_change permits; test accuracy "
            f"{accuracy:.4f} >= {min_accuracy}"
        )
    if champion["accuracy"] is None:
        return True, (
            f"the production model {champion['uri']} cannot be compared (an older format); "
            f"test accuracy {accuracy:.4f} >= {min_accuracy}"
        )
    # on the images both were scored on: a stratified sample of a large test split
    mine = champion.get("challenger_accuracy", accuracy)
    on = f" on a sample of {champion['images']} test images" if champion.get("sampled") else ""
    # A regression of exactly max_regression passes: accuracies are fractions of images and
    # max_regression a decimal, whose float difference is off in the last bits (0.8 - 0.7
    # is above 0.1 in floats); a real excess of k/n over a decimal is far above 1e-12.
    if champion["accuracy"] - mine > max_regression + 1e-12:
        return False, (
            f"test accuracy {mine:.4f}{on} is worse than the production model's "
            f"{champion['accuracy']:.4f} by more than max_regression {max_regression}"
        )
    return True, (
        f"test accuracy {accuracy:.4f} >= {min_accuracy} and{on} within max_regression "
        f"{max_regression} of the production model's {champion['accuracy']:.4f}"
    )


def check_consistency(evaluation: dict, test: list[dataset.Example], predictions_path: str) -> None:
    """Accuracy is the confusion matrix's trace over its sum, supports are the manifest's test
    counts, and ``predictions.csv`` holds every test image exactly once."""
    matrix = np.asarray(evaluation["confusion_matrix"])
    if not math.isclose(evaluation["test_accuracy"], np.trace(matrix) / matrix.sum()):
        raise ConsistencyError(
            f"accuracy {evaluation['test_accuracy']} is not the confusion matrix's "
            f"{np.trace(matrix)}/{matrix.sum()}"
        )
    manifest_counts = Counter(e.label for e in test)
    expected = {e.path for e in test}
    for name in evaluation["classes"]:
        support = evaluation["classification_report"][name]["support"]
        if support != manifest_counts[name]:
            raise ConsistencyError(
                f"class {name}: support {support} but the manifest has {manifest_counts[name]} "
                "test images"
            )
    with open(predictions_path, newline="") as f:
        written = Counter(row["path"] for row in csv.DictReader(f))
    twice = sorted(p for p, n in written.items() if n > 1)
    missing, unknown = sorted(expected - set(written)), sorted(set(written) - expected)
    for problem, paths in (("twice", twice), ("missing", missing), ("not in test", unknown)):
        if paths:
            raise ConsistencyError(f"{predictions_path}: {problem}: {', '.join(paths[:5])}")


def test_probabilities(
    served: serving.Served,
    feature_dirs: list[str],
    dataset_dir: str,
    rows: list[int],
    y_true: np.ndarray,
    training: dict,
) -> np.ndarray:
    """Probabilities of every test image (in ``rows`` order) from its extracted features
    through the saved head; the features must be this model's backbone's, and each feature
    row's label the manifest's."""
    index, found = shards.feature_shards(feature_dirs, "test", dataset_dir)
    for key in ("backbone", "image_size", "weights"):
        if index[key] != training[key]:
            raise ConsistencyError(
                f"{feature_dirs[0]}: features of {key} {index[key]}, model of {training[key]}"
            )
    if served.predict_features is None:
        raise ConsistencyError("the model has no predict_features signature (an older layout)")
    position = {row: i for i, row in enumerate(rows)}
    probabilities = np.full((len(rows), len(training["classes"])), np.nan, np.float32)
    for path, shard in found:
        counted = 0
        parse = shards.parse_features(shard["dtype"], index["dim"])
        for batch in shards.records(path, shard["bytes"], parse, 4096):
            where = [position.get(int(r)) for r in batch["row"]]
            if None in where or (batch["label"] != y_true[where]).any():
                raise ConsistencyError(
                    f"{path}: rows or labels that are not the manifest's test rows"
                )
            probabilities[where] = served.predict_features(batch["features"])
            counted += len(where)
        shards.count_records(path, shard["count"], counted)
    if np.isnan(probabilities).any():
        raise ConsistencyError("the feature shards miss test images of the manifest")
    return probabilities


def check_serving(
    served: serving.Served,
    dataset_dir: str,
    paths: list[str],
    rows: list[int],
    probabilities: np.ndarray,
    sample: np.ndarray,
) -> dict:
    """The sample's images, as encoded bytes through ``serving_default``, must get the
    probabilities evaluation computed from their features, within ``TOLERANCE``."""
    scored = score_images(served.predict, dataset_dir, np.asarray(rows)[sample])
    worst = 0.0
    for i in sample:
        served_row, expected = scored[rows[i]], probabilities[i]
        difference = float(np.abs(served_row - expected).max())
        if served_row.argmax() != expected.argmax() or difference > TOLERANCE:
            raise ConsistencyError(
                f"{paths[i]}: serving_default gives probabilities {difference:.2e} away from "
                f"the evaluation's (more than {TOLERANCE}); serving is not what was evaluated"
            )
        worst = max(worst, difference)
    return {"images": len(sample), "max_difference": worst, "tolerance": TOLERANCE}


@dataclass(frozen=True)
class TestSplit:
    """The test split as evaluation scores it: its manifest rows, in manifest order, their
    examples and their labels as class indices."""

    rows: list[int]
    examples: list[dataset.Example]
    y_true: np.ndarray

    @classmethod
    def of(cls, dataset_dir: str, classes: list[str]) -> TestSplit:
        manifest = dataset.read_manifest(dataset_dir)
        rows = [i for i, e in enumerate(manifest) if e.split == "test"]
        examples = [manifest[i] for i in rows]
        return cls(rows, examples, dataset.label_indices(examples, classes, dataset_dir))

    @property
    def paths(self) -> list[str]:
        return [e.path for e in self.examples]


def evaluate(
    dataset_dir: str,
    feature_dirs: list[str],
    model_dir: str,
    *,
    predictions_path: str,
    report_path: str,
    evaluation_path: str,
    summary_path: str | None = None,
    gate: GateSettings,
    serving_sample: int,
    registry_uri: str | None = None,
    model_name: str | None = None,
    batch_size: int = 32,
) -> Evaluation:
    """Writes predictions.csv, evaluation.json, the HTML report and (``summary_path``) its
    Markdown summary; returns the evaluation with the gate's decision.

    The production model of ``registry_uri``/``model_name``, if any, is scored on the same
    test images as the challenger, or on a stratified sample of ``gate.gate_sample`` of
    them (``model_name`` is read only with ``registry_uri``).
    """
    lap("import")
    nets.devices()
    served = serving.open_served(model_dir, batch_size)
    lap("build")
    training = artifact.read_json(model_dir, artifact.TRAINING_FILE)
    test = TestSplit.of(dataset_dir, served.classes)
    if training.get("fine_tune_kept"):
        # Fine-tuning changed the backbone: the extracted features are not this model's, so
        # every test image goes through serving_default, which is then the evaluation itself.
        scored = score_images(served.predict, dataset_dir, np.asarray(test.rows))
        probabilities = np.array([scored[row] for row in test.rows])
    else:
        probabilities = test_probabilities(
            served, feature_dirs, dataset_dir, test.rows, test.y_true, training
        )
    y_pred = probabilities.argmax(axis=1)
    evaluation, plots = measure(
        served, dataset_dir, model_dir, training, test, (probabilities, y_pred), serving_sample
    )
    predictions.write(
        predictions_path, test.paths, served.classes, test.y_true, y_pred, probabilities
    )
    check_consistency(evaluation, test.examples, predictions_path)
    champion_version = (
        registry.production_version(registry_uri, model_name) if registry_uri else None
    )
    production = champion_version and registry.path(registry_uri, model_name, champion_version)
    evaluation["gate"] = judge(
        evaluation, test, y_pred, (champion_version, production), dataset_dir, gate, batch_size
    )
    Path(evaluation_path).write_text(json.dumps(evaluation, indent=2))
    write_report(
        evaluation, plots, test, (probabilities, y_pred), dataset_dir, report_path, summary_path
    )
    return evaluation


def measure(
    served: serving.Served, dataset_dir: str, model_dir: str, training: dict, test: TestSplit,
    predicted: tuple[np.ndarray, np.ndarray], serving_sample: int,
) -> tuple[Evaluation, list]:  # fmt: skip
    """The evaluation's figures, with serving checked on a stratified sample of
    ``serving_sample`` test images; and the report's plots, drawn meanwhile.
    ``predicted``: each test image's probabilities, and the class they predict."""
    classes = served.classes
    (probabilities, y_pred), y_true = predicted, test.y_true
    labels = list(range(len(classes)))
    matrix = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    history = artifact.read_json(model_dir, artifact.HISTORY_FILE)
    with ThreadPoolExecutor(1) as painter:
        # on a core that TensorFlow leaves idle while it starts the served model's graph
        plots = painter.submit(report.figures, matrix, classes, history, training)
        if training.get("fine_tune_kept"):  # every image went through serving_default
            checked = {"images": len(test.rows), "max_difference": 0.0, "tolerance": TOLERANCE}
        else:
            sample = stratified_sample(y_true, serving_sample)
            checked = check_serving(
                served, dataset_dir, test.paths, test.rows, probabilities, sample
            )
    data = artifact.read_json(dataset_dir, split.FACTS)
    evaluation: Evaluation = {
        "test_accuracy": float(accuracy_score(y_true, y_pred)),
        "accuracy_ci95": wilson_interval(int((y_true == y_pred).sum()), len(y_true)),
        "classes": classes,
        "confusion_matrix": matrix,
        "classification_report": classification_report(
            y_true, y_pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
        ),
        "n_test": len(test.rows),
        "data": data,
        "training": training,
        "model_sha256": artifact.served_files_sha256(model_dir),
        "serving_check": checked,
        "warnings": data["warnings"] + training.get("warnings", []),
    }
    return evaluation, plots.result()


def judge(
    evaluation: Evaluation, test: TestSplit, y_pred: np.ndarray,
    production: tuple[str | None, str | None], dataset_dir: str, gate: GateSettings,
    batch_size: int,
) -> Gate:  # fmt: skip
    """The gate's decision: the production model (``production``: its version and URI, or
    None) scored on the same test images, or a stratified sample of them, and :func:`decide`."""
    classes, rows = evaluation["classes"], test.rows
    champion_version, production_uri = production
    compared = stratified_sample(test.y_true, gate.gate_sample)
    champion = None
    if production_uri:
        scored = score_champion(
            production_uri, dataset_dir, np.asarray(rows)[compared], classes, batch_size
        )
        champion = {"uri": production_uri, "classes": scored["classes"], "accuracy": None}
        if scored["probabilities"] is not None:
            theirs = np.array([scored["probabilities"][rows[i]].argmax() for i in compared])
            champion.update(
                accuracy=float(accuracy_score(test.y_true[compared], theirs)),
                challenger_accuracy=float(accuracy_score(test.y_true[compared], y_pred[compared])),
                images=len(compared),
                sampled=len(compared) < len(rows),
            )
    added, lost = class_change(classes, champion)
    passed, reason = decide(
        evaluation["test_accuracy"], gate.min_accuracy, gate.max_regression, champion,
        (added, lost), gate.allow_class_change,
    )  # fmt: skip
    compared_on = champion is not None and champion["accuracy"] is not None
    return Gate(
        passed=passed,
        reason=reason,
        champion_version=champion_version,
        champion_uri=production_uri,
        champion_accuracy=champion and champion["accuracy"],
        min_accuracy=gate.min_accuracy,
        max_regression=gate.max_regression,
        classes_added=added,
        classes_lost=lost,
        compared_images=len(compared) if compared_on else 0,
        compared_sampled=compared_on and len(compared) < len(rows),
        challenger_accuracy=champion["challenger_accuracy"] if compared_on else None,
    )


def write_report(
    evaluation: Evaluation, plots: list, test: TestSplit,
    predicted: tuple[np.ndarray, np.ndarray], dataset_dir: str, report_path: str,
    summary_path: str | None,
) -> None:  # fmt: skip
    """The HTML report, with the images of the examples it shows, and its Markdown summary."""
    classes, (probabilities, y_pred) = evaluation["classes"], predicted
    examples = [
        report.Example(path, classes[t], classes[p], float(probs[p]))
        for path, t, p, probs in zip(test.paths, test.y_true, y_pred, probabilities, strict=True)
    ]
    wrong, right = report.shown(examples)
    row_of = dict(zip(test.paths, test.rows, strict=True))
    images = dict(shards.image_rows(dataset_dir, "test", {row_of[e.path] for e in wrong + right}))
    with_images = [
        [replace(e, image=images[row_of[e.path]]) for e in part] for part in (wrong, right)
    ]
    Path(report_path).write_text(report.render(evaluation, plots, examples, tuple(with_images)))
    if summary_path:
        Path(summary_path).write_text(report.markdown(evaluation))
