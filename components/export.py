"""Step 4: publish a model that passed the gate as a new, immutable registry version.

A version is ``registry/<model_name>/<UTC time>-<model hash>/`` holding a TensorFlow
SavedModel (``saved_model/``, ``serving_default`` signature), ``labels.txt`` and
``metadata.json``. The SavedModel is the one training wrote and evaluate scored, copied
byte for byte (no TensorFlow here). The version is assembled locally and published in one
step that refuses to replace anything already stored; then ``LATEST`` names it as the
production model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from components import artifact, dataset, storage
from components.registry import promote


def tree_sha256(folder: str | Path) -> str:
    """One hash of every file's relative path and content."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(
            f"{path.relative_to(folder).as_posix()}\0{dataset.sha256_of(path)}\n".encode()
        )
    return digest.hexdigest()


def new_version(saved_model: str | Path) -> str:
    """Sorts by time; the model's hash tells two exports in the same second apart."""
    now = dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{tree_sha256(saved_model)[:8]}"


def export(
    model_dir: str, dataset_dir: str, evaluation_path: str, *, registry: str, model_name: str
) -> dict:
    """Writes the new version and returns its metadata, including its ``uri``."""
    storage.check_bucket(registry)
    evaluation = json.loads(Path(evaluation_path).read_text())
    training = evaluation["training"]
    saved_model = Path(model_dir, artifact.SAVED_MODEL_DIR)
    classes = artifact.read_labels(model_dir)
    version = new_version(saved_model)
    uri = storage.join(registry, model_name, version)
    metadata = {
        "model_name": model_name,
        "version": version,
        "uri": uri,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "backbone": training["backbone"],
        "weights": training["weights"],
        "image_size": training["image_size"],
        "classes": classes,
        "metrics": {
            "test_accuracy": evaluation["test_accuracy"],
            "macro_f1": evaluation["classification_report"]["macro avg"]["f1-score"],
        },
        "manifest_sha256": dataset.sha256_of(Path(dataset_dir, dataset.MANIFEST)),
        "gate": evaluation["gate"],
    }
    with tempfile.TemporaryDirectory(prefix="shapes-export-") as tmp:
        shutil.copytree(saved_model, Path(tmp, artifact.SAVED_MODEL_DIR))
        artifact.write_labels(tmp, classes)
        Path(tmp, "metadata.json").write_text(json.dumps(metadata, indent=2))
        storage.publish_tree(tmp, uri)
    promote(registry, model_name, version)  # only a passing gate runs this step
    return metadata
