"""Step 4: publish a model that passed the gate as a new, immutable registry version.

A version is ``registry/<model_name>/<UTC time>-<model hash>/`` holding a TensorFlow
SavedModel (``saved_model/``, ``serving_default`` signature), ``labels.txt`` and
``metadata.json``. It is assembled locally and published in one step that refuses to
replace anything already stored.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

from components import dataset, model, storage


def new_version(model_dir: str) -> str:
    """Sorts by time; the model's hash tells two exports in the same second apart."""
    now = dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{dataset.sha256_of(Path(model_dir, model.MODEL_FILE))[:8]}"


def export(
    model_dir: str, dataset_dir: str, evaluation_path: str, *, registry: str, model_name: str
) -> dict:
    """Writes the new version and returns its metadata, including its ``uri``."""
    storage.check_bucket(registry)
    evaluation = json.loads(Path(evaluation_path).read_text())
    training = evaluation["training"]
    classifier, classes = model.load(model_dir)
    version = new_version(model_dir)
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
    }
    with tempfile.TemporaryDirectory(prefix="shapes-export-") as tmp:
        model.save_serving(classifier, Path(tmp, "saved_model"))
        model.write_labels(tmp, classes)
        Path(tmp, "metadata.json").write_text(json.dumps(metadata, indent=2))
        storage.publish_tree(tmp, uri)
    return metadata
