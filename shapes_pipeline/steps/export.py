"""Step 5: publish a model that passed the gate as a new, immutable registry version.

A version is ``registry/<model_name>/<UTC time>-<content hash>/`` holding the TensorFlow
SavedModel under ``saved_model/1/`` (``saved_model/`` is what TensorFlow Serving's
``--model_base_path`` or a KServe ``storageUri`` takes), ``labels.txt`` and
``metadata.json``. The SavedModel is the one training wrote and evaluate scored, copied
byte for byte: before anything is published, the copy's content hash must be the one
evaluate recorded for the files it loaded and scored (``verify="reload"`` also has a fresh
process load the copy and reproduce evaluate's sample); then the version is published in
one final step that replaces nothing, and ``LATEST`` moves to it only if production is
still the model the gate compared against. A model already stored (same files, say a
rerun after a failure past publishing) is not stored twice: that version is promoted
instead.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shapes_pipeline.helpers import artifact, dataset, storage
from shapes_pipeline.helpers.facts import Published
from shapes_pipeline.helpers.registry import (
    METADATA,
    PromotionConflict,
    find_by_content,
    production_version,
    promote,
)
from shapes_pipeline.helpers.registry import path as registry_path
from shapes_pipeline.helpers.step import InputError, lap, one_line, package_versions
from shapes_pipeline.steps.verify import VerificationError


def new_version(content_sha256: str) -> str:
    """Sorts by time; the content hash tells two exports in the same second apart (and
    makes two with the same name hold the same files)."""
    now = dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{content_sha256[:8]}"


NAME_TRIES = 25


def unused_version(registry: str, model_name: str, content_sha256: str) -> str:
    """A new version name that no folder has yet: what a crashed export of the same model
    left in the same second (a folder without metadata) would otherwise be in the way."""
    taken = set(storage.list_folders(registry_path(registry, model_name)))
    for _ in range(NAME_TRIES):  # a name is a second's: the next second's is free
        version = new_version(content_sha256)
        if version not in taken:
            return version
        time.sleep(0.2)
    raise storage.StorageError(
        f"{registry_path(registry, model_name)}: no free version name after "
        f"{NAME_TRIES} tries (is the clock stuck?); run export again"
    )


def verify_in_fresh_process(
    model_dir: str, dataset_dir: str, predictions_path: str, sample: int
) -> dict:
    """``verify.verify`` in a new Python process; its result, or the error."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shapes_pipeline.steps.verify",
            model_dir,
            dataset_dir,
            predictions_path,
            str(sample),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise VerificationError(f"verification of the model to publish failed: {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def export(
    model_dir: str,
    dataset_dir: str,
    evaluation_path: str,
    predictions_path: str,
    *,
    registry: str,
    model_name: str,
    pipeline_run: dict | None = None,
    verify: str = "hash",
) -> Published:
    """Publishes the new version, makes it production and returns its metadata (with
    ``uri``). ``pipeline_run`` (the KFP run's id and name) goes into the metadata.

    ``verify``: ``hash``, the copy's content hash must be the evaluated files'; ``reload``,
    also load the copy in a fresh process and rescore evaluate's serving sample.
    """
    lap("import")
    storage.check_bucket(registry)
    evaluation = json.loads(Path(evaluation_path).read_text())
    champion = gate_still_holds(evaluation, evaluation_path, registry, model_name)
    for left in storage.remove_stale_staging(registry_path(registry, model_name)):
        print(one_line(f"removed {left}, left by an export that did not finish"))
    with tempfile.TemporaryDirectory(prefix="shapes-export-") as tmp:
        shutil.copytree(Path(model_dir, artifact.SERVING_DIR), Path(tmp, artifact.SERVING_DIR))
        artifact.write_labels(tmp, artifact.read_labels(model_dir))
        content = artifact.tree_sha256(tmp)
        if content != evaluation["model_sha256"]:
            raise VerificationError(
                f"{model_dir}: the files to publish (sha256 {content[:12]}) are not the files "
                f"evaluate scored ({evaluation['model_sha256'][:12]}); nothing published"
            )
        stored = find_by_content(registry, model_name, content)
        if stored:  # a rerun (say, after a failure past publishing): no second copy
            print(f"version {stored['version']} already holds this model; not published again")
            promote(registry, model_name, stored["version"], replaces=champion)
            return stored
        verification = {"method": "hash", "content_sha256": content}
        if verify == "reload":
            sample = evaluation["serving_check"]["images"]
            reloaded = verify_in_fresh_process(tmp, dataset_dir, predictions_path, sample)
            verification = {**verification, "method": "reload", **reloaded}
        version = unused_version(registry, model_name, content)
        uri = registry_path(registry, model_name, version)
        metadata = describe(evaluation, dataset_dir, model_name, version, uri, content)
        metadata.update(verification=verification, pipeline_run=pipeline_run)
        Path(tmp, METADATA).write_text(json.dumps(metadata, indent=2))
        storage.publish_tree(tmp, uri, marker=METADATA)
    promote(registry, model_name, version, replaces=champion)
    return metadata


def gate_still_holds(
    evaluation: dict, evaluation_path: str, registry: str, model_name: str
) -> str | None:
    """The production version the gate compared against, if the gate passed and it is
    still production; otherwise the one line that says why nothing is published."""
    gate = evaluation["gate"]
    if not gate["passed"]:
        raise InputError(f"{evaluation_path}: the gate did not pass ({gate['reason']})")
    champion = gate["champion_version"]
    if production_version(registry, model_name) != champion:
        raise PromotionConflict(
            f"{model_name}: production is no longer {champion or 'empty'}, which the gate "
            "compared against; nothing published"
        )
    return champion


def describe(
    evaluation: dict, dataset_dir: str, model_name: str, version: str, uri: str, content: str
) -> Published:
    """The version's metadata: what it is, how good, trained on what, by which code."""
    training = evaluation["training"]
    return {
        "model_name": model_name,
        "version": version,
        "uri": uri,
        "content_sha256": content,
        "serving_uri": storage.join(uri, artifact.SERVING_DIR),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "backbone": training["backbone"],
        "weights": training["weights"],
        "image_size": training["image_size"],
        "classes": evaluation["classes"],
        "metrics": {
            "test_accuracy": evaluation["test_accuracy"],
            "accuracy_ci95": evaluation["accuracy_ci95"],
            "macro_f1": evaluation["classification_report"]["macro avg"]["f1-score"],
        },
        "manifest_sha256": dataset.sha256_of(Path(dataset_dir, dataset.MANIFEST)),
        "gate": evaluation["gate"],
        "verification": {},
        "pipeline_run": None,
        "packages": {
            "training": training.get("packages"),
            "export": package_versions("kfp", "google-cloud-storage", "shapes-pipeline"),
        },
    }
