"""The model artifact's layout, readable without TensorFlow (export only copies files).

``saved_model/1/`` (the serving SavedModel; ``saved_model/`` is the base path TensorFlow
Serving and KServe take, where they look for numbered versions), ``labels.txt`` (class
names in the order of the model's outputs), ``history.json`` (per-epoch metrics),
``training.json`` (the run's facts) and ``logs/`` (TensorBoard).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from shapes_pipeline.helpers.dataset import sha256_of

SERVING_DIR = "saved_model"
SAVED_MODEL_DIR = f"{SERVING_DIR}/1"
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


def tree_sha256(folder: str | Path, only: tuple[str, ...] | None = None) -> str:
    """One hash of every file's relative path and content (``only``: of the files under
    these top-level names)."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if only is None or rel.parts[0] in only:
            content = sha256_of(path)
            digest.update(f"{rel.as_posix()}\0{content}\n".encode())
    return digest.hexdigest()


def served_files_sha256(model_dir: str | Path) -> str:
    """The hash of what export publishes from a model artifact: its SavedModel and labels."""
    return tree_sha256(model_dir, only=(SERVING_DIR, LABELS_FILE))
