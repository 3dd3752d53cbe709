"""Helpers the test modules share (fixtures are in conftest.py): model settings, the CLI
as a user runs it, and ways to build and compare registries."""

import io
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
from google.cloud import storage as gcs
from weights import MISSING, weights_file

from shapes_pipeline.helpers import model, registry, serving, storage
from shapes_pipeline.helpers.facts import MILD_AUGMENTATION, TrainingFacts
from shapes_pipeline.helpers.settings import (
    AugmentSettings,
    FineTuneSettings,
    GateSettings,
    TrainingSettings,
    defaults,
)
from shapes_pipeline.steps.evaluate import evaluate
from shapes_pipeline.steps.export import export

REPO = Path(__file__).resolve().parents[1]

# A small backbone, random weights and tiny images keep every test well under a minute.
# Its outputs are the same for every image: for tests of plumbing (shapes, files, flags),
# never for a test that compares one image's result with another's.
SMALL = {"backbone": "MobileNetV3Small", "weights": "none", "image_size": 32}
# The table's gate, with any accuracy passing: tests of evaluation, not of the threshold.
ANY_ACCURACY = GateSettings.of({**defaults(), "min_accuracy": 0.0})
SERVING_SAMPLE = defaults()["serving_sample"]


def imagenet_mobilenet() -> Path:
    """The real ImageNet weights of ``keras.applications.MobileNet`` kept beside the project
    (``../shared/weights/``; ``SHAPES_TEST_WEIGHTS`` overrides), which Keras cannot download
    here. Tests that need a model whose outputs differ from image to image use them."""
    found = weights_file()
    if found is None:
        pytest.fail(MISSING["weights"])
    return found


# MobileNet with ImageNet weights at 48 px, trained a few epochs: right on most test images
# of the demo shapes, with probabilities that differ from image to image and are not yet
# saturated at 1.0, so a check that compared one image's row with another's would fail.
LEARNS = {"backbone": "MobileNet", "image_size": 48}


def augment_settings(
    augment: bool = False, augment_views: int = 8, augmentation: dict | None = None
) -> AugmentSettings:
    """The augmentation group from the arguments tests write: on or off, views, transforms
    (mild by default)."""
    t = augmentation or MILD_AUGMENTATION
    return AugmentSettings(
        augment=augment, augment_views=augment_views, augment_rotation=t["rotation"],
        augment_zoom=t["zoom"], augment_translation=t["translation"],
        augment_contrast=t["contrast"], augment_flip_horizontal=t["flip_horizontal"],
        augment_flip_vertical=t["flip_vertical"],
    )  # fmt: skip


def extract_args(**flat) -> dict:
    """``extract``'s keyword arguments from flat ones (``augment``, ``augment_views``,
    ``augmentation`` become its augmentation group)."""
    keys = ("augment", "augment_views", "augmentation")
    return {**{k: v for k, v in flat.items() if k not in keys},
            "augment": augment_settings(**{k: flat[k] for k in keys if k in flat})}  # fmt: skip


def train_args(**flat) -> dict:
    """``train``'s keyword arguments from flat ones: the training, augmentation and
    fine-tuning groups (the table's defaults for what is not given)."""
    values = {**defaults(), "fine_tune_layers": 0, **flat}
    groups = {"training": TrainingSettings, "fine_tuning": FineTuneSettings}
    grouped = {name: cls.of(values) for name, cls in groups.items()}
    keys = ("augment", "augment_views", "augmentation")
    grouped["augment"] = augment_settings(**{k: flat[k] for k in keys if k in flat})
    taken = {f for cls in groups.values() for f in cls.__dataclass_fields__} | set(keys)
    return {**{k: v for k, v in flat.items() if k not in taken}, **grouped}


def train_model(
    dataset_dir: Path,
    out: Path,
    *,
    groups: int = 1,
    augment: bool = False,
    augment_views: int = 8,
    batch_size: int = 32,
    cache: str = "",
    **settings,
) -> dict:
    """Extract (in ``groups`` tasks, into ``<out>-features-<group>``) then train, as the
    pipeline runs them; ``cache``: extract's backbone cache. ``settings``: backbone,
    weights, image_size, seed, epochs, ... ."""
    from shapes_pipeline.steps.extract import extract
    from shapes_pipeline.steps.train import train

    shared = {k: settings[k] for k in ("backbone", "weights", "image_size", "seed")}
    dirs = [str(out.parent / f"{out.name}-features-{g}") for g in range(groups)]
    augmenting = {"augment": augment, "augment_views": augment_views}
    for group, folder in enumerate(dirs):
        extract(
            str(dataset_dir), folder, group=group, groups=groups, batch_size=batch_size,
            cache=cache, **extract_args(**augmenting, **shared),
        )  # fmt: skip
    return train(
        str(dataset_dir), dirs, str(out),
        **train_args(batch_size=batch_size, **augmenting, **settings),
    )  # fmt: skip


def feature_dirs(model_dir: Path) -> list[str]:
    """The feature folders :func:`train_model` wrote for ``model_dir``."""
    return sorted(str(p) for p in model_dir.parent.glob(f"{model_dir.name}-features-*"))


def split_images(dataset_dir: Path, split: str = "test") -> list[bytes]:
    """A split's encoded images, read from the shards, in manifest order."""
    from shapes_pipeline.helpers import dataset, shards

    rows = {i for i, e in enumerate(dataset.read_manifest(dataset_dir)) if e.split == split}
    return [image for _, image in sorted(shards.image_rows(dataset_dir, split, rows))]


def assert_varied(probabilities: np.ndarray, margin: float = 1e-3) -> None:
    """Every two images' probabilities differ by more than ``margin`` somewhere."""
    rows = np.asarray(probabilities)
    gaps = np.abs(rows[:, None, :] - rows[None, :, :]).max(axis=2)
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() > margin, f"two images get (nearly) the same probabilities: {gaps.min()}"


def options(settings: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]


# Plumbing runs (bad input, flags): the tiny random backbone, whose outputs are all alike.
FAST = ["--epochs", "3", "--patience", "5", *options(SMALL)]
# Runs whose per-image results are compared: a model whose outputs differ between images.
LEARNING = ["--epochs", "5", "--patience", "5", *options(LEARNS)]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``shapes-pipeline ARGS`` in a new process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "shapes_pipeline.runners.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def cli_here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``shapes-pipeline ARGS`` in this process (for commands refused before any step runs:
    the same code as :func:`cli`, without a new Python's start)."""
    from shapes_pipeline.runners import cli as command_line

    out, err, previous = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                command_line.main(list(args))
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run(data, *options: str, cwd: Path) -> subprocess.CompletedProcess:
    """``shapes-pipeline run`` on ``data`` with the small, fast settings and a local registry."""
    return cli("run", "--data", str(data), "--registry", "reg", *FAST, *options, cwd=cwd)


# the model name the export tests publish under
EXPORTED = "shapes"


def run_export(
    trained, split_dir, evaluated, registry_uri: str, model_dir=None, verify="hash"
) -> dict:
    """``export`` of the ``trained`` model, as evaluated, to ``registry_uri``."""
    return export(
        str(model_dir or trained),
        str(split_dir),
        evaluated["evaluation_path"],
        evaluated["predictions_path"],
        registry=registry_uri,
        model_name=EXPORTED,
        pipeline_run={"id": "run-1", "name": "shapes-run-1"},
        verify=verify,
    )


def published(registry_uri: str) -> list[str]:
    """The versions of ``EXPORTED`` in the registry, oldest first."""
    return [v["version"] for v in registry.versions(registry_uri, EXPORTED)]


def registry_with_a_version(root: Path, model_name: str = "shapes-classifier") -> dict:
    """A local registry with one published production version; returns every file's bytes,
    to show that a refused run left it exactly as it was."""
    version = root / model_name / "20260101T000000Z-0123abcd"
    (version / "saved_model" / "1").mkdir(parents=True)
    (version / "saved_model" / "1" / "saved_model.pb").write_bytes(b"\x08\x01 a model")
    (version / "labels.txt").write_text("circles\nsquares\ntriangles\n")
    (version / "metadata.json").write_text(json.dumps({"version": version.name}))
    (root / model_name / "LATEST").write_text(f"{version.name}\n")
    return tree_bytes(root)


def tree_bytes(root: Path) -> dict:
    """Every file under ``root`` (relative path -> bytes), and every folder."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def upload_folder(bucket: gcs.Bucket, local: Path, prefix: str) -> str:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        bucket.blob(f"{prefix}/{path.relative_to(local).as_posix()}").upload_from_filename(
            str(path)
        )
    return f"gs://{bucket.name}/{prefix}"


def save_oracle(model_dir: Path, kernel: np.ndarray, bias: np.ndarray, classes: list[str]) -> None:
    """A model artifact whose network is known: mean colour per channel -> Dense -> softmax."""
    inputs = keras.Input((32, 32, 3))
    dense = keras.layers.Dense(len(classes), activation="softmax")
    oracle = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([kernel, bias])
    head = keras.Sequential([keras.Input((3,)), dense])
    facts = TrainingFacts(
        backbone="oracle", weights="none", image_size=32, classes=classes,
        devices=["/physical_device:CPU:0"], replicas=1, precision="float32",
        caching="features of each image, computed once", features_in_memory=True,
        augment=False, augmentation=None, early_stopping=True,
        epoch_limit=1, epochs_run=1, head_epochs=1, best_epoch=1, best_val_loss=1.0,
        build_seconds=0.0, feature_seconds=0.0, head_seconds=0.0, training_seconds=0.0,
        warnings=["a test warning"], packages={},
    )  # fmt: skip
    history = {"loss": [1.0], "val_loss": [1.0], "accuracy": [0.5], "val_accuracy": [0.5]}
    classify = model.compiled(lambda x: oracle(x, training=False), 32)
    signatures = serving.serving_signatures(classify, classes, head)
    serving.save(model_dir, signatures, head, classes, history, facts)


def save_oracle_features(dataset_dir: Path, out: Path) -> str:
    """What extract would write for the oracle's "backbone" (each test image's mean colour
    at 32 px, float32); returns the folder."""
    import tensorflow as tf

    from shapes_pipeline.helpers import shards
    from shapes_pipeline.helpers.facts import FeatureIndex, FeatureShard

    out.mkdir(parents=True)
    written = []
    for shard in shards.read_index(dataset_dir)["shards"]:
        if shard["split"] != "test":
            continue
        name = Path(shard["file"]).name
        path = dataset_dir / shard["file"]
        with tf.io.TFRecordWriter(str(out / name)) as writer:
            for batch in shards.records(path, shard["bytes"], shards.parse_images, 64):
                means = tf.reduce_mean(shards.decode_batch(batch["image"], 32), axis=[1, 2])
                for features, label, row in zip(
                    means.numpy(), batch["label"], batch["row"], strict=True
                ):
                    writer.write(shards.feature_example(features.tobytes(), label, row, 0))
        written.append(
            FeatureShard(file=name, source=shard["file"], split="test", count=shard["count"],
                         bytes=(out / name).stat().st_size, dtype="float32")
        )  # fmt: skip
    index = FeatureIndex(
        backbone="oracle", weights="none", image_size=32, dim=3, augment_views=0,
        augmentation=None, group=0,
        groups=1, shards=written, devices=[], precision="float32", seconds=0.0,
        serving=None, images=sum(s["count"] for s in written), warnings=[], backbone_cache=None,
    )  # fmt: skip
    (out / shards.FEATURE_INDEX).write_text(json.dumps(index))
    return str(out)


def evaluate_oracle(root: Path, model: str = "model", out: Path | None = None, **given) -> dict:
    """``evaluate`` of the model folder ``root/<model>`` on ``root/ds`` and its features
    ``root/features`` (:func:`save_oracle_features`), writing into ``out`` (or ``root``).
    ``given``: ``registry_uri``, ``model_name`` and gate settings by their parameter names
    (the others as :data:`ANY_ACCURACY` has them)."""
    out = out or root
    out.mkdir(exist_ok=True)
    where = {k: given.pop(k, defaults().get(k)) for k in ("registry_uri", "model_name")}
    return evaluate(
        str(root / "ds"), [str(root / "features")], str(root / model),
        predictions_path=str(out / "predictions.csv"), report_path=str(out / "report.html"),
        evaluation_path=str(out / "evaluation.json"), summary_path=str(out / "summary.md"),
        gate=replace(ANY_ACCURACY, **given), serving_sample=SERVING_SAMPLE,
        **where,
    )  # fmt: skip


def images_by_path(dataset_dir: Path, split: str = "test") -> dict[str, bytes]:
    """A split's encoded images (read from the shards) by manifest path."""
    from shapes_pipeline.helpers import dataset, shards

    manifest = dataset.read_manifest(dataset_dir)
    rows = {i for i, e in enumerate(manifest) if e.split == split}
    return {manifest[r].path: image for r, image in shards.image_rows(dataset_dir, split, rows)}


class Interleaving:
    """Forces the interleaving a race test is about: whoever passes its check first waits
    there, before writing, until the other writer has passed its check too, or is waiting
    for the lock that should keep it out. So both writers act on the same stale check
    unless a lock or a precondition stops one, every time, whatever the threads' timing."""

    def __init__(self, monkeypatch, check: str):
        self.ready: set[int] = set()
        self.changed = threading.Condition()
        checked = getattr(storage, check)
        flock = storage.fcntl.flock

        def check_then_wait(*args):
            result = checked(*args)
            self._arrive(wait=True)
            return result

        def announce_then_lock(*args):
            self._arrive(wait=False)
            return flock(*args)

        monkeypatch.setattr(storage, check, check_then_wait)
        monkeypatch.setattr(storage.fcntl, "flock", announce_then_lock)

    def _arrive(self, wait: bool) -> None:
        with self.changed:
            self.ready.add(threading.get_ident())
            self.changed.notify_all()
            if wait and not self.changed.wait_for(lambda: len(self.ready) >= 2, timeout=60):
                raise AssertionError("the second writer never came")


def race(job, inputs: list) -> list:
    """Runs ``job`` on both inputs at once; each result or raised exception."""
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(job, x) for x in inputs]
    return [f.exception() or f.result() for f in futures]


def pipeline_inputs() -> dict:
    """Name -> KFP's input spec (``type``, ``default``, ``description``) of the pipeline as
    KFP built it: what a cluster's UI shows."""
    from shapes_pipeline.kubeflow.pipeline import shapes_pipeline

    return dict(shapes_pipeline.component_spec.inputs)
