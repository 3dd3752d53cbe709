"""Step 2: the frozen backbone over one group of image shards, as feature shards.

The pipeline runs one task per group (``dsl.ParallelFor``); a task reads only its own
shards (every ``groups``-th one, from ``group``), so its cost is its share of the data and a
rerun writes the same files. Features of a frozen backbone are the same in every epoch, so
training reads them instead of running the backbone again; with ``augment_views``, each
training image also gets that many augmented views' features, a batch at a time.

The first task also writes the serving SavedModel with an untrained head: train, which
only trains the head, fills in its weights instead of building the backbone again. With a
backbone cache
(``shapes_pipeline.helpers.backbone_cache``), a run that finds its traced extractor there loads it
instead of building and tracing the backbone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from shapes_pipeline.helpers import backbone as nets
from shapes_pipeline.helpers import backbone_cache, model, serving, shards, tfrecord
from shapes_pipeline.helpers.facts import (
    Augmentation,
    FeatureIndex,
    FeatureShard,
    Shard,
)
from shapes_pipeline.helpers.settings import NO_AUGMENTATION, AugmentSettings
from shapes_pipeline.helpers.step import lap

# Test features stay float32: evaluation checks them through the head against the served
# model fed the same images' bytes, within 1e-4; float16 rounding alone is larger.
DTYPES = {"train": "float16", "val": "float16", "test": "float32"}


def on_every_device(
    traced: model.TracedFunction,
    features: keras.Model | None,
    strategy: tf.distribute.Strategy,
) -> Callable[[np.ndarray], np.ndarray]:
    """The feature extractor over a batch (``traced``, on one device); with several devices
    (``--gpus N``), each takes its share of the batch under ``MirroredStrategy``."""
    n = strategy.num_replicas_in_sync
    if n == 1:
        return lambda x: np.asarray(traced(x))

    @tf.function
    def replicated(values):
        return strategy.run(lambda x: features(x, training=False), args=(values,))

    def run(x: np.ndarray) -> np.ndarray:
        parts = np.array_split(np.asarray(x), n)
        values = strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(parts[context.replica_id_in_sync_group])
        )
        out = strategy.experimental_local_results(replicated(values))
        return np.concatenate([np.asarray(t) for t in out])

    return run


@dataclass
class Extractor:
    """The backbone as extraction runs it: traced, with its Keras network where it was built
    (None when loaded from the backbone cache), and where it came from."""

    traced: model.TracedFunction
    features: keras.Model | None
    dim: int
    weights: str
    warnings: list[str]
    cache_key: str | None  # its entry in the backbone cache, where it is cached
    loaded: object | None  # the cache's loaded entry, kept alive: it owns traced's variables

    @property
    def cache_state(self) -> str | None:
        """``loaded`` or ``built`` where the backbone cache holds this backbone."""
        if not self.cache_key:
            return None
        return "built" if self.loaded is None else "loaded"


@dataclass(frozen=True)
class ShardExtraction:
    """What extracting one image shard needs besides the shard: where, at what size, and
    the augmented views of its training images."""

    dataset_dir: str
    out: Path
    image_size: int
    batch_size: int
    seed: int
    views: int
    transforms: Augmentation

    def decode(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        # in the tf.data pipeline: the next batches decode on other cores while this one runs
        parsed = shards.parse_images(serialized)
        return {**parsed, "pixels": shards.decode_batch(parsed["image"], self.image_size)}

    def run(self, position: int, shard: Shard, features: Callable) -> tuple[FeatureShard, int]:
        """One feature shard: every image's features, and each training image's augmented
        views; its record and the images read."""
        source = Path(self.dataset_dir, shard["file"])
        name = Path(shard["file"]).name
        dtype = DTYPES[shard["split"]]
        # one augmenter per shard, seeded by its place in the index: grouping-independent
        augment_fn = nets.augmenter(self.seed + position, self.transforms)
        counted = 0
        with tfrecord.Writer(self.out / name) as writer:
            for batch in shards.records(source, shard["bytes"], self.decode, self.batch_size):
                x = batch["pixels"]
                passes = [(0, x)]
                if shard["split"] == "train":
                    passes += [(v, nets.augment(augment_fn, x)) for v in range(1, self.views + 1)]
                for view, images_in in passes:
                    values = np.asarray(features(images_in)).astype(dtype)
                    for row_features, label, row in zip(
                        values, batch["label"], batch["row"], strict=True
                    ):
                        writer.write(
                            shards.feature_example(row_features.tobytes(), label, row, view)
                        )
                counted += len(batch["row"])
        shards.count_records(source, shard["count"], counted)
        count = counted * (1 + (self.views if shard["split"] == "train" else 0))
        return FeatureShard(
            file=name, source=shard["file"], split=shard["split"], count=count,
            bytes=(self.out / name).stat().st_size, dtype=dtype,
        ), counted  # fmt: skip


def extract(
    dataset_dir: str,
    out_dir: str,
    *,
    group: int,
    groups: int,
    backbone: str,
    weights: str,
    image_size: int,
    batch_size: int,
    seed: int,
    augment: AugmentSettings = NO_AUGMENTATION,
    precision: str = "auto",
    cache: str = "",
) -> FeatureIndex:
    """Writes ``out_dir/features.json`` and a feature shard per image shard of the group.

    Given a ``cache`` (a folder or ``gs://`` URI), the traced extractor is loaded from it
    when it is there, and stored in it when it is not (``helpers/backbone_cache.py``).
    """
    lap("import")
    started = time.perf_counter()
    found = nets.devices(precision)
    index = shards.read_index(dataset_dir)
    # as train does before building: the same seed, the same random backbone (weights=none)
    keras.utils.set_random_seed(seed)
    strategy = nets.strategy()
    extractor = _extractor(strategy, backbone, weights, image_size, seed, cache)
    features = on_every_device(extractor.traced, extractor.features, strategy)
    views = augment.augment_views if augment.augment else 0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    job = ShardExtraction(
        dataset_dir, out, image_size, batch_size, seed, views, augment.transforms()
    )
    classes = index["classes"]
    template_dir = shards.SERVING_TEMPLATE if group == 0 else None
    head = model.head(extractor.dim, len(classes), seed=seed) if group == 0 else None
    with ThreadPoolExecutor(1) as saver:
        pending = _side_work(saver, extractor, head, classes, out, cache)
        # mine are every groups-th shard of the index from group: their positions in it
        positions = range(group, len(index["shards"]), groups)
        mine = zip(positions, shards.of_group(index, group, groups), strict=True)
        done = [job.run(p, shard, features) for p, shard in mine]
        lap("work")
        for waiting in pending:  # the wait for what the thread saves, once features are out
            waiting.result()
            lap("save")
    facts = FeatureIndex(
        backbone=backbone, weights=extractor.weights, image_size=image_size,
        dim=extractor.dim, augment_views=views, augmentation=job.transforms if views else None,
        group=group, groups=groups, shards=[shard for shard, _ in done], serving=template_dir,
        devices=found, precision=keras.mixed_precision.global_policy().name,
        seconds=round(time.perf_counter() - started, 2),
        images=sum(counted for _, counted in done), backbone_cache=extractor.cache_state,
        warnings=extractor.warnings,
    )  # fmt: skip
    Path(out, shards.FEATURE_INDEX).write_text(json.dumps(facts, indent=2))
    return facts


def _extractor(
    strategy: tf.distribute.Strategy, backbone: str, weights: str, image_size: int, seed: int,
    cache: str,
) -> Extractor:  # fmt: skip
    """The traced feature extractor: from the backbone cache where it holds it, else built
    and traced (once, for extraction and for the serving model)."""
    # one device's traced extractor can be cached; several devices' are traced per run
    key = (
        backbone_cache.key(backbone, weights, image_size, seed)
        if cache and strategy.num_replicas_in_sync == 1
        else None
    )
    hit = backbone_cache.load(cache, key, image_size) if key else None
    if hit:
        lap("build")  # no Keras network: only one device runs a cached extractor
        return Extractor(hit.features, None, hit.dim, weights, hit.warnings, key, hit)
    with strategy.scope():
        base, weights_used, warnings = nets.build_backbone(backbone, weights, image_size)
        base.trainable = False
        features = model.feature_extractor(base, backbone, image_size)
    lap("build")
    traced = model.compiled(model.packed(features), image_size)
    lap("trace")
    dim = int(features.output_shape[-1])
    return Extractor(traced, features, dim, weights_used, warnings, key, None)


def _side_work(
    saver: ThreadPoolExecutor, extractor: Extractor, head: keras.Model | None,
    classes: list[str], out: Path, cache: str,
) -> list[Future]:  # fmt: skip
    """What one thread saves while the backbone runs over the shards: the serving model
    train completes (the first task only), then the backbone cache's new entry. A GPU
    extracts while the CPU traces and saves, and even a CPU's cores have room for both."""
    pending = []
    if head is not None:
        serving_dir = out / shards.SERVING_TEMPLATE
        pending.append(saver.submit(_prepare_serving, extractor, head, classes, serving_dir))
    if extractor.cache_key and extractor.loaded is None:
        pending.append(saver.submit(
            backbone_cache.store, cache, extractor.cache_key, extractor.traced, extractor.dim,
            extractor.warnings,
        ))  # fmt: skip
    return pending


def _prepare_serving(
    extractor: Extractor, head: keras.Model, classes: list[str], folder: Path
) -> None:
    signatures = serving.signatures_of(extractor.traced, head, classes)
    serving.write_saved_model(folder, signatures, head)
