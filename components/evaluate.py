"""Step 3: score the model on the test split, which training never saw.

What is scored is the SavedModel that export publishes, loaded as serving loads it.

Images and labels come from one list in manifest order and ``predict`` keeps that order,
so every prediction is compared with its own label (the notebook's shuffled test
generator broke exactly this and reported 0.30 for a model that scored 1.000).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from components import artifact, dataset, model, report


def evaluate(
    dataset_dir: str,
    model_dir: str,
    *,
    predictions_path: str,
    report_path: str,
    evaluation_path: str,
    batch_size: int = 32,
) -> dict:
    """Writes predictions.csv, the HTML report and evaluation.json; returns the evaluation."""
    predict, classes, image_size = model.load(model_dir, batch_size)
    training = artifact.read_json(model_dir, artifact.TRAINING_FILE)
    x, y_true, paths = dataset.load_split(dataset_dir, "test", image_size, classes)
    probabilities = predict(x)
    y_pred = probabilities.argmax(axis=1)

    labels = list(range(len(classes)))
    evaluation = {
        "test_accuracy": float(accuracy_score(y_true, y_pred)),
        "classes": classes,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classification_report": classification_report(
            y_true, y_pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
        ),
        "n_test": len(paths),
        "training": training,
        "warnings": training.get("warnings", []),
    }
    _write_predictions(predictions_path, paths, classes, y_true, y_pred, probabilities)
    Path(evaluation_path).write_text(json.dumps(evaluation, indent=2))
    history = artifact.read_json(model_dir, artifact.HISTORY_FILE)
    Path(report_path).write_text(report.render(evaluation, history))
    return evaluation


def _write_predictions(
    path: str,
    paths: list[str],
    classes: list[str],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probabilities: np.ndarray,
) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "true_class", "predicted_class", *(f"p_{c}" for c in classes)])
        for p, t, q, probs in zip(paths, y_true, y_pred, probabilities, strict=True):
            writer.writerow([p, classes[t], classes[q], *(f"{v:.6f}" for v in probs)])
