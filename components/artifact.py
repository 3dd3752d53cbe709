"""The model artifact's layout, readable without TensorFlow (export only copies files).

``saved_model/`` (the serving SavedModel), ``labels.txt`` (class names in the order of the
model's outputs), ``history.json`` (per-epoch metrics), ``training.json`` (the run's facts)
and ``logs/`` (TensorBoard).
"""

from __future__ import annotations

import json
from pathlib import Path

SAVED_MODEL_DIR = "saved_model"
LABELS_FILE = "labels.txt"
HISTORY_FILE = "history.json"
TRAINING_FILE = "training.json"
TENSORBOARD_DIR = "logs"


def write_labels(folder: str | Path, classes: list[str]) -> None:
    Path(folder, LABELS_FILE).write_text("".join(f"{c}\n" for c in classes))


def read_labels(folder: str | Path) -> list[str]:
    return Path(folder, LABELS_FILE).read_text().splitlines()


def read_json(folder: str | Path, name: str) -> dict:
    return json.loads(Path(folder, name).read_text())
