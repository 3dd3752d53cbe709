"""Traced feature extractors kept across runs (``backbone_cache``), like a compilation
cache: scheduled retraining builds the same frozen backbone run after run, and building it
with Keras and tracing it is seconds of single-threaded Python each time, where loading a
traced copy is well under one.

An entry is a SavedModel of the traced extractor, weights included, under a key made of
everything that decides what it computes: the backbone, its weights (a local file's
SHA-256, a ``gs://`` file's checksum as GCS keeps it, or the seed of a random init), the
image size, the precision, the TensorFlow and Keras versions, and the source of the code
that builds and traces it. ImageNet weights that Keras downloads (``imagenet``, ``auto``)
are not keyed by content here, so they are not cached. Entries are published whole and
never replaced (``storage.publish_tree``); one that cannot be loaded is reported and built
around.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from shapes_pipeline.helpers import backbone, model, storage
from shapes_pipeline.helpers.dataset import sha256_of
from shapes_pipeline.helpers.step import InfrastructureError

log = logging.getLogger(__name__)

ENTRY = "entry.json"  # written last: an entry without it is unfinished
SAVED_MODEL = "saved_model"
# what a cache that cannot be read or written raises: the run goes on without it
UNAVAILABLE = (storage.StorageError, InfrastructureError)
UNREADABLE = (OSError, ValueError, KeyError, TypeError, *UNAVAILABLE, tf.errors.OpError)
UNWRITABLE = (OSError, *UNAVAILABLE, tf.errors.OpError)
# the code whose change changes what an entry computes
_SOURCES = (Path(model.__file__), Path(backbone.__file__))


def key(backbone_name: str, weights: str, image_size: int, seed: int) -> str | None:
    """The entry's name for this extractor, or None where it is not cached (see above).

    The precision is the global policy, so ``backbone.devices`` must have set it."""
    if weights == "none":
        init = {"random_init_seed": seed}
    elif weights in ("imagenet", "auto"):
        return None
    elif storage.is_gcs(weights):
        try:
            init = {"gcs_checksum": storage.checksum(weights)}
        except UNAVAILABLE:
            return None  # build_backbone reports it, naming the file
    elif Path(weights).is_file():
        init = {"sha256": sha256_of(weights)}
    else:
        return None
    material = {
        "backbone": backbone_name,
        "weights": init,
        "image_size": image_size,
        "precision": keras.mixed_precision.global_policy().name,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "code": [sha256_of(p) for p in _SOURCES],
    }
    text = json.dumps(material, sort_keys=True)
    return f"{backbone_name}-{image_size}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


@dataclass
class Hit:
    """A cached extractor: ``features`` traced over image batches, as ``model.compiled``
    gives; ``loaded`` keeps its variables alive as long as the hit is."""

    features: model.TracedFunction
    dim: int
    warnings: list[str]
    loaded: object = field(repr=False)


def load(root: str, name: str, image_size: int) -> Hit | None:
    """The entry ``name`` under ``root``, or None when there is none or it cannot be read
    (with a warning naming it: delete it and the next run stores a fresh one)."""
    where = storage.join(root, name)
    try:
        if not storage.is_gcs(root):
            return _loaded(Path(where), image_size) if Path(where, ENTRY).is_file() else None
        if storage.read_text(storage.join(where, ENTRY)) is None:
            return None
        # loading restores the weights into memory: the downloaded files can go
        with tempfile.TemporaryDirectory(prefix="backbone-cache-") as local:
            storage.download_tree(where, local)
            return _loaded(Path(local), image_size)
    except UNREADABLE as e:
        log.warning("backbone cache: %s cannot be loaded (%s); building the backbone", where, e)
        return None


def _loaded(entry: Path, image_size: int) -> Hit:
    facts = json.loads(Path(entry, ENTRY).read_text())
    loaded = tf.saved_model.load(str(entry / SAVED_MODEL))
    return Hit(
        features=model.compiled(loaded.features, image_size),
        dim=int(facts["dim"]),
        warnings=list(facts["warnings"]),
        loaded=loaded,
    )


def store(
    root: str, name: str, features: model.TracedFunction, dim: int, warnings: list[str]
) -> None:
    """Publishes the traced extractor as entry ``name``; a run that stored it first wins.
    Where it cannot be stored, the run goes on without it (with a warning naming it)."""
    module = tf.Module()
    module.features = features
    module.weights = list(features.get_concrete_function().variables)
    where = storage.join(root, name)
    try:
        with tempfile.TemporaryDirectory(prefix="backbone-cache-") as tmp:
            tf.saved_model.save(module, str(Path(tmp, SAVED_MODEL)))
            Path(tmp, ENTRY).write_text(json.dumps({"dim": dim, "warnings": warnings}, indent=2))
            with suppress(storage.StorageConflict):  # the same key: the same extractor
                storage.publish_tree(tmp, where, ENTRY)
    except UNWRITABLE as e:
        log.warning("backbone cache: cannot store %s (%s); the run goes on without it", where, e)
