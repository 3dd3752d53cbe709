"""Step 3: score the model on the test split, which training never saw.

What is scored is the SavedModel that export publishes, loaded as serving loads it and
fed the test files' bytes as a client would send them.

Images and labels come from one list in manifest order and ``predict`` keeps that order,
so every prediction is compared with its own label (the notebook's shuffled test
generator broke exactly this and reported 0.30 for a model that scored 1.000).
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from components import artifact, dataset, model, predictions, registry, report, split, storage
from components.facts import Evaluation, Gate
from components.step import InputError


class ConsistencyError(InputError):
    """The evaluation contradicts itself or the manifest: no report is better than a wrong one."""


def wilson_interval(correct: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy (sound for small test sets and near 1.0)."""
    interval = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    return float(interval.low), float(interval.high)


def score_champion(
    uri: str, files: list[Path], y_true: np.ndarray, classes: list[str], batch_size: int
) -> dict:
    """The production model (``uri``), scored on this run's test images (``files``, labelled
    ``y_true``): ``accuracy`` None where it cannot be compared (other classes, or a format
    older than serving from encoded images); ``classes`` its classes, None if unknown."""
    with storage.local_tree(uri) as local:
        try:
            predict, champion_classes = model.load(local, batch_size)
        except InputError:  # an older format: nothing to compare with
            return {"uri": uri, "accuracy": None, "classes": None}
        if champion_classes != classes:
            return {"uri": uri, "accuracy": None, "classes": champion_classes}
        accuracy = float(accuracy_score(y_true, predict(files).argmax(axis=1)))
        return {"uri": uri, "accuracy": accuracy, "classes": champion_classes}


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
    if accuracy < champion["accuracy"] - max_regression:
        return False, (
            f"test accuracy {accuracy:.4f} is worse than the production model's "
            f"{champion['accuracy']:.4f} by more than max_regression {max_regression}"
        )
    return True, (
        f"test accuracy {accuracy:.4f} >= {min_accuracy} and within max_regression "
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


def evaluate(
    dataset_dir: str,
    model_dir: str,
    *,
    predictions_path: str,
    report_path: str,
    evaluation_path: str,
    summary_path: str | None = None,
    registry_uri: str | None = None,
    model_name: str = "shapes-classifier",
    min_accuracy: float = 0.0,
    max_regression: float = 0.0,
    allow_class_change: bool = False,
    batch_size: int = 32,
) -> Evaluation:
    """Writes predictions.csv, evaluation.json, the HTML report and (``summary_path``) its
    Markdown summary; returns the evaluation with the gate's decision.

    The production model of ``registry_uri``/``model_name``, if any, is scored on the same
    test images as the challenger.
    """
    predict, classes = model.load(model_dir, batch_size)
    training = artifact.read_json(model_dir, artifact.TRAINING_FILE)
    test = [e for e in dataset.read_manifest(dataset_dir) if e.split == "test"]
    y_true = dataset.label_indices(test, classes, dataset_dir)
    paths = [e.path for e in test]
    files = [Path(dataset_dir, p) for p in paths]
    probabilities = predict(files)
    y_pred = probabilities.argmax(axis=1)

    labels = list(range(len(classes)))
    data = artifact.read_json(dataset_dir, split.FACTS)
    correct = int((y_true == y_pred).sum())
    evaluation: Evaluation = {
        "test_accuracy": float(accuracy_score(y_true, y_pred)),
        "accuracy_ci95": wilson_interval(correct, len(y_true)),
        "classes": classes,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classification_report": classification_report(
            y_true, y_pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
        ),
        "n_test": len(paths),
        "data": data,
        "training": training,
        "model_sha256": artifact.served_files_sha256(model_dir),
        "warnings": data["warnings"] + training.get("warnings", []),
    }
    predictions.write(predictions_path, paths, classes, y_true, y_pred, probabilities)
    check_consistency(evaluation, test, predictions_path)
    champion_version = (
        registry.production_version(registry_uri, model_name) if registry_uri else None
    )
    production = champion_version and registry.path(registry_uri, model_name, champion_version)
    champion = production and score_champion(production, files, y_true, classes, batch_size)
    added, lost = class_change(classes, champion)
    passed, reason = decide(
        evaluation["test_accuracy"], min_accuracy, max_regression, champion, (added, lost),
        allow_class_change,
    )  # fmt: skip
    evaluation["gate"] = Gate(
        passed=passed,
        reason=reason,
        champion_version=champion_version,
        champion_uri=production,
        champion_accuracy=champion and champion["accuracy"],
        min_accuracy=min_accuracy,
        max_regression=max_regression,
        classes_added=added,
        classes_lost=lost,
    )
    Path(evaluation_path).write_text(json.dumps(evaluation, indent=2))
    history = artifact.read_json(model_dir, artifact.HISTORY_FILE)
    examples = [
        report.Example(file, classes[t], classes[p], float(probs[p]))
        for file, t, p, probs in zip(files, y_true, y_pred, probabilities, strict=True)
    ]
    Path(report_path).write_text(report.render(evaluation, history, examples))
    if summary_path:
        Path(summary_path).write_text(report.markdown(evaluation))
    return evaluation
