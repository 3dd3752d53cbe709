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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from shapes_pipeline.helpers import backbone as nets
from shapes_pipeline.helpers import backbone_cache, model, serving, shards, tfrecord
from shapes_pipeline.helpers.facts import (
    MILD_AUGMENTATION,
    Augmentation,
    FeatureIndex,
    FeatureShard,
    Shard,
)
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
    augment: bool = False,
    augment_views: int = 8,
    augmentation: Augmentation = MILD_AUGMENTATION,
    precision: str = "auto",
    cache: str = "",
) -> FeatureIndex:
    """Writes ``out_dir/features.json`` and a feature shard per image shard of the group.

    Given a ``cache``
    (a folder or ``gs://`` URI), the traced extractor is loaded from it when it is there,
    and stored in it when it is not (``shapes_pipeline.helpers.backbone_cache``).
    """
    lap("import")
    started = time.perf_counter()
    found = nets.devices(precision)
    index = shards.read_index(dataset_dir)
    mine = shards.of_group(index, group, groups)
    # as train does before building: the same seed, the same random backbone (weights=none)
    keras.utils.set_random_seed(seed)
    strategy = nets.strategy()
    # one device's traced extractor can be cached; several devices' are traced per run
    cached = (
        backbone_cache.key(backbone, weights, image_size, seed)
        if cache and strategy.num_replicas_in_sync == 1
        else None
    )
    hit = backbone_cache.load(cache, cached, image_size) if cached else None
    if hit:
        traced, dim, weights_used, warnings = hit.features, hit.dim, weights, hit.warnings
        features = None  # no Keras network: only one device runs a cached extractor
        lap("build")
    else:
        with strategy.scope():
            base, weights_used, warnings = nets.build_backbone(backbone, weights, image_size)
            base.trainable = False
            features = model.feature_extractor(base, backbone, image_size)
        dim = int(features.output_shape[-1])
        lap("build")
        # the network the serving model holds; traced once, for extraction and for serving
        traced = model.compiled(model.packed(features), image_size)
        lap("trace")
    run = on_every_device(traced, features, strategy)

    def parse_and_decode(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        # in the tf.data pipeline: the next batches decode on other cores while this one runs
        parsed = shards.parse_images(serialized)
        return {**parsed, "pixels": shards.decode_batch(parsed["image"], image_size)}

    views = augment_views if augment else 0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def extract_shard(position: int, shard: Shard) -> tuple[FeatureShard, int]:
        source = Path(dataset_dir, shard["file"])
        name = Path(shard["file"]).name
        dtype = DTYPES[shard["split"]]
        # one augmenter per shard, seeded by its place in the index: grouping-independent
        augment_fn = nets.augmenter(seed + position, augmentation)
        counted = 0
        with tfrecord.Writer(out / name) as writer:
            for batch in shards.records(source, shard["bytes"], parse_and_decode, batch_size):
                x = batch["pixels"]
                passes = [(0, x)]
                if shard["split"] == "train":
                    passes += [(v, nets.augment(augment_fn, x)) for v in range(1, views + 1)]
                for view, images_in in passes:
                    values = np.asarray(run(images_in)).astype(dtype)
                    for row_features, label, row in zip(
                        values, batch["label"], batch["row"], strict=True
                    ):
                        writer.write(
                            shards.feature_example(row_features.tobytes(), label, row, view)
                        )
                counted += len(batch["row"])
        shards.count_records(source, shard["count"], counted)
        count = counted * (1 + (views if shard["split"] == "train" else 0))
        size = (out / name).stat().st_size
        return FeatureShard(
            file=name, source=shard["file"], split=shard["split"], count=count, bytes=size,
            dtype=dtype,
        ), counted  # fmt: skip

    classes = index["classes"]
    template_dir = shards.SERVING_TEMPLATE if group == 0 else None
    head = model.head(dim, len(classes), seed=seed) if group == 0 else None

    def prepare_serving() -> None:
        signatures = serving.signatures_of(traced, head, classes)
        serving.write_saved_model(out / template_dir, signatures, head)

    with ThreadPoolExecutor(1) as saver:
        # One task prepares the serving model train completes, on a thread while the
        # backbone runs over the shards: a GPU extracts while the CPU traces and saves,
        # and even a CPU's cores have room for both.
        prepared = saver.submit(prepare_serving) if head is not None else None
        # stored while the backbone runs, from the same thread (after the serving model)
        stored = (
            saver.submit(backbone_cache.store, cache, cached, traced, dim, warnings)
            if cached and not hit
            else None
        )
        # mine are every groups-th shard of the index from group: their positions in it
        positions = range(group, len(index["shards"]), groups)
        done = [extract_shard(p, shard) for p, shard in zip(positions, mine, strict=True)]
        lap("work")
        if prepared is not None:
            prepared.result()
            # the wait for the serving model, once the features are written
            lap("save")
        if stored is not None:
            stored.result()
            lap("save")
    written = [shard for shard, _ in done]
    images = sum(counted for _, counted in done)
    facts = FeatureIndex(
        backbone=backbone,
        weights=weights_used,
        image_size=image_size,
        dim=dim,
        augment_views=views,
        augmentation=augmentation if views else None,
        group=group,
        groups=groups,
        shards=written,
        serving=template_dir,
        devices=found,
        precision=keras.mixed_precision.global_policy().name,
        seconds=round(time.perf_counter() - started, 2),
        images=images,
        backbone_cache=("loaded" if hit else "built") if cached else None,
        warnings=warnings,
    )
    Path(out, shards.FEATURE_INDEX).write_text(json.dumps(facts, indent=2))
    return facts
