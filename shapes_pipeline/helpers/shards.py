"""The data set's TFRecord shards and the feature shards extract writes from them.

A Dataset artifact holds ``manifest.csv`` (which image is in which split, the one source
of truth), ``shards.json`` (the shard index: every shard's split, record count, size and
per-class counts) and ``<split>/<split>-NNNNN.tfrecord``: ``tf.train.Example``s holding each
image's original encoded bytes, its label index and class name, its path in the source
and in the manifest, its sha256 and its manifest row. Shards are cut at about ``shard_mb``
(the size the TensorFlow guide advises for streaming from object storage) and hold their
split's images in a seeded shuffled order, so a shuffle buffer over interleaved shards
mixes the classes.

A feature artifact (one per extract task) holds ``features.json`` and one TFRecord shard
per image shard it read: the backbone's pooled features as raw bytes (float16 for train and
val, float32 for test, which evaluation checks against serving within 1e-4), the label,
the manifest row and the augmented view (0 is the image itself).

A shard is checked for its recorded size before it is read and for its record count after;
TensorFlow checks every record's CRC. A truncated or corrupt shard is one error naming it.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from shapes_pipeline.helpers import tfrecord
from shapes_pipeline.helpers.dataset import SPLITS, DataError, Example
from shapes_pipeline.helpers.facts import FeatureIndex, Shard, ShardIndex

if TYPE_CHECKING:
    import tensorflow as tf

INDEX = "shards.json"
FEATURE_INDEX = "features.json"
SERVING_TEMPLATE = "serving"  # in the first extract task's output (``FeatureIndex.serving``)
DEFAULT_SHARD_MB = 100.0
# Training holds features in memory up to this, and streams them above it.
DEFAULT_FEATURE_MEMORY_MB = 2048
# Records in a streaming shuffle buffer: well mixed across interleaved shards, bounded.
SHUFFLE_BUFFER = 16_384


def plan(
    examples: list[Example], sizes: list[int], shard_mb: float, seed: int
) -> list[tuple[str, list[int]]]:
    """(file, manifest rows) of every shard: per split, the rows in a seeded shuffled order,
    cut where a shard reaches ``shard_mb`` of encoded images."""
    limit = shard_mb * 1_000_000
    shards = []
    for split in SPLITS:
        rows = [i for i, e in enumerate(examples) if e.split == split]
        random.Random(seed).shuffle(rows)
        groups: list[list[int]] = []
        size = limit
        for row in rows:
            if size >= limit:
                groups.append([])
                size = 0
            groups[-1].append(row)
            size += sizes[row]
        shards += [(f"{split}/{split}-{n:05d}.tfrecord", g) for n, g in enumerate(groups)]
    return shards


def write(
    out_dir: str | Path,
    examples: list[Example],
    files: list[Path],
    sources: list[str],
    classes: list[str],
    shard_mb: float,
    seed: int,
) -> ShardIndex:
    """Writes the image shards and ``shards.json``; reads one image file at a time.

    ``files``: each manifest row's image file; ``sources``: its path in the source.
    """
    sizes = [f.stat().st_size for f in files]
    index = {name: i for i, name in enumerate(classes)}
    written: list[Shard] = []
    for name, rows in plan(examples, sizes, shard_mb, seed):
        path = Path(out_dir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tfrecord.Writer(path) as writer:
            for row in rows:
                e = examples[row]
                writer.write(
                    tfrecord.example(
                        image=[files[row].read_bytes()],
                        label=[index[e.label]],
                        row=[row],
                        **{"class": [e.label.encode()]},
                        path=[e.path.encode()],
                        source=[sources[row].encode()],
                        sha256=[e.sha256.encode()],
                    )
                )
        counts = Counter(examples[r].label for r in rows)
        written.append(
            Shard(
                file=name,
                split=examples[rows[0]].split,
                count=len(rows),
                bytes=path.stat().st_size,
                classes={c: counts[c] for c in classes if counts[c]},
            )
        )
    shard_index = ShardIndex(shard_mb=shard_mb, classes=classes, shards=written)
    Path(out_dir, INDEX).write_text(json.dumps(shard_index, indent=2))
    return shard_index


def read_index(dataset_dir: str | Path) -> ShardIndex:
    path = Path(dataset_dir, INDEX)
    if not path.is_file():
        raise DataError(f"{dataset_dir}: no {INDEX}; not a sharded data set (split it again)")
    return json.loads(path.read_text())


def of_group(index: ShardIndex, group: int, groups: int) -> list[Shard]:
    """The shards one of ``groups`` extract tasks reads: every ``groups``-th, from ``group``.
    Shard to group is fixed by the index alone, so a rerun reads the same shards."""
    return index["shards"][group::groups]


def groups(dataset_dir: str | Path, workers: int) -> list[int]:
    """The extract groups to run: one per worker, never more than there are shards."""
    return list(range(min(workers, len(read_index(dataset_dir)["shards"]))))


def checked(path: Path, expected_bytes: int) -> str:
    """``path`` if it has its recorded size (a truncated shard fails here, before reading)."""
    if not path.is_file():
        raise DataError(f"{path}: shard missing")
    size = path.stat().st_size
    if size != expected_bytes:
        raise DataError(
            f"{path}: truncated or corrupt shard ({size} bytes, expected {expected_bytes})"
        )
    return str(path)


def records(path: Path, expected_bytes: int, parse, batch_size: int) -> Iterator[dict]:
    """Parsed batches of one shard, as numpy; any read error names the shard."""
    import tensorflow as tf

    data = tf.data.TFRecordDataset(checked(path, expected_bytes))
    data = data.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    try:
        yield from prefetched(data).as_numpy_iterator()
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise DataError(f"{path}: truncated or corrupt shard ({e.message.splitlines()[0]})") from e


def parse_images(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    import tensorflow as tf

    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "row": tf.io.FixedLenFeature([], tf.int64),
    }
    return tf.io.parse_example(serialized, spec)


def image_rows(dataset_dir: str | Path, split: str, wanted: set[int], batch_size: int = 64):
    """(row, encoded image) of the ``wanted`` manifest rows of ``split``, shard by shard, so
    only one batch of images is in memory at a time."""
    index = read_index(dataset_dir)
    for shard in index["shards"]:
        if shard["split"] != split:
            continue
        path = Path(dataset_dir, shard["file"])
        for batch in records(path, shard["bytes"], parse_images, batch_size):
            for row, image in zip(batch["row"], batch["image"], strict=True):
                if int(row) in wanted:
                    yield int(row), image


def count_records(path: Path, expected: int, counted: int) -> None:
    if counted != expected:
        raise DataError(
            f"{path}: truncated or corrupt shard ({counted} records, expected {expected})"
        )


# Feature shards ------------------------------------------------------------------------


def feature_example(features: bytes, label: int, row: int, view: int) -> bytes:
    return tfrecord.example(features=[features], label=[label], row=[row], view=[view])


def parse_features(dtype: str, dim: int):
    """A parser of feature-shard batches into float features, labels, rows and views."""
    import tensorflow as tf

    spec = {
        "features": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "row": tf.io.FixedLenFeature([], tf.int64),
        "view": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, spec)
        raw = tf.io.decode_raw(parsed["features"], tf.dtypes.as_dtype(dtype))
        parsed["features"] = tf.reshape(raw, [-1, dim])
        return parsed

    return parse


def feature_shards(
    feature_dirs: list[str], split: str, dataset_dir: str | Path
) -> tuple[FeatureIndex, list[tuple[Path, dict]]]:
    """The feature shards of ``split`` over every extract task's output, checked to come from
    one backbone and to cover each of the data set's shards of ``split`` exactly once."""
    indexes = [json.loads(Path(d, FEATURE_INDEX).read_text()) for d in feature_dirs]
    first = indexes[0]
    same = ("backbone", "weights", "image_size", "dim", "augment_views", "augmentation")
    for d, ix in zip(feature_dirs, indexes, strict=True):
        differing = [k for k in same if ix[k] != first[k]]
        if differing:
            raise DataError(f"{d}: features from another backbone or setting ({differing})")
    found = [
        (Path(d, s["file"]), s)
        for d, ix in zip(feature_dirs, indexes, strict=True)
        for s in ix["shards"]
        if s["split"] == split
    ]
    expected = sorted(s["file"] for s in read_index(dataset_dir)["shards"] if s["split"] == split)
    got = sorted(s["source"] for _, s in found)
    if got != expected:
        raise DataError(
            f"the feature artifacts cover {split} shards {got}, but the data set has {expected}"
        )
    return first, sorted(found, key=lambda f: f[1]["source"])


def serving_template(feature_dirs: list[str]) -> Path:
    """The serving SavedModel the first extract task wrote, its head untrained."""
    for d in feature_dirs:
        serving = json.loads(Path(d, FEATURE_INDEX).read_text()).get("serving")
        if serving:
            return Path(d, serving)
    raise DataError(f"{feature_dirs[0]}: no extract task wrote the serving model")


def load_features(found: list[tuple[Path, dict]], dim: int) -> tuple:
    """Features (float16 or float32 as stored), labels and rows of ``found`` feature shards,
    in memory, ordered by (row, view): the same arrays however the shards were grouped."""
    import numpy as np

    parts = []
    for path, shard in found:
        parse = parse_features(shard["dtype"], dim)
        batches = list(records(path, shard["bytes"], parse, 4096))
        count_records(path, shard["count"], sum(len(b["row"]) for b in batches))
        parts += batches
    if not parts:
        return np.zeros((0, dim), np.float16), np.zeros(0, np.int64), np.zeros(0, np.int64)
    joined = {
        k: np.concatenate([b[k] for b in parts]) for k in ("features", "label", "row", "view")
    }
    order = np.lexsort((joined["view"], joined["row"]))
    return joined["features"][order], joined["label"][order], joined["row"][order]


def stream_features(
    found: list[tuple[Path, dict]], dim: int, batch_size: int, seed: int, shuffle: bool
):
    """Feature batches ``(features, labels)`` read from the shards as training goes: shards
    interleaved and records shuffled in a bounded buffer (``shuffle``), never all in memory."""
    dtypes = {s["dtype"] for _, s in found}
    if len(dtypes) != 1:
        raise DataError(f"feature shards of mixed types {sorted(dtypes)}")
    files = [checked(path, shard["bytes"]) for path, shard in found]
    data = _interleaved(files, seed, SHUFFLE_BUFFER if shuffle else 0)
    parse = parse_features(dtypes.pop(), dim)
    data = data.batch(batch_size).map(lambda b: _pair(parse(b), "features"))
    return prefetched(data)


def stream_images(
    dataset_dir: str | Path, split: str, image_size: int, batch_size: int, seed: int, shuffle: bool
):
    """Batches ``(pixels, labels)`` of a split's image shards, decoded on every core as
    training goes (fine-tuning needs pixels), shuffled in a bounded buffer (``shuffle``)."""
    import tensorflow as tf

    from shapes_pipeline.helpers.images import decode

    found = [s for s in read_index(dataset_dir)["shards"] if s["split"] == split]
    files = [checked(Path(dataset_dir, s["file"]), s["bytes"]) for s in found]
    # images are larger than feature rows: a smaller buffer
    data = _interleaved(files, seed, SHUFFLE_BUFFER // 8 if shuffle else 0)
    data = data.batch(batch_size).map(parse_images, num_parallel_calls=tf.data.AUTOTUNE)
    data = data.unbatch().map(
        lambda r: (decode(r["image"], image_size), r["label"]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return prefetched(data.batch(batch_size))


def prefetched(data: tf.data.Dataset) -> tf.data.Dataset:
    """``data`` read ahead, with tf.data's autotuner off: its parallel steps then use every
    core. With the autotuner on, the end of an iteration sometimes stalled for seconds here
    (the extract step, see docs/benchmarks.md); a fixed pipeline never did."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return data.prefetch(tf.data.AUTOTUNE).with_options(options)


def _interleaved(files: list[str], seed: int, buffer: int):
    """The records of ``files``, four shards read at a time; with a ``buffer``, shards and
    records shuffled anew each epoch (seeded)."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(files)
    if buffer:
        data = data.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    data = data.interleave(
        tf.data.TFRecordDataset, cycle_length=4, num_parallel_calls=4, deterministic=True
    )
    if buffer:
        data = data.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return data


def _pair(parsed: dict, key: str) -> tuple:
    return parsed[key], parsed["label"]


def decode_batch(images, image_size: int):
    """Encoded images (a batch of a parsed shard) as the served model decodes them."""
    import tensorflow as tf

    from shapes_pipeline.helpers.images import decode

    return tf.map_fn(
        lambda b: decode(b, image_size),
        images,
        fn_output_signature=tf.TensorSpec((image_size, image_size, 3), tf.float32),
    )


def load_pixels(dataset_dir: str | Path, split: str, image_size: int) -> tuple:
    """A split's decoded pixels and labels in manifest order, all in memory: only for small
    data (the notebook's way in ``make bench``, and tests)."""
    import numpy as np

    x, y, rows = [], [], []
    for shard in read_index(dataset_dir)["shards"]:
        if shard["split"] == split:
            path = Path(dataset_dir, shard["file"])
            for batch in records(path, shard["bytes"], parse_images, 256):
                x.append(np.asarray(decode_batch(batch["image"], image_size)))
                y.append(batch["label"])
                rows.append(batch["row"])
    order = np.argsort(np.concatenate(rows))
    return np.concatenate(x)[order], np.concatenate(y)[order]
