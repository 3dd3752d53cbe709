"""Properties of the shards, for generated inputs: the shard cut rule, the extract groups,
the class mix of shuffled shards, and shards.json against the records themselves. The
split's properties are in test_properties_split.py."""

import json
import random
import struct
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shapes_pipeline.helpers import shards, tfrecord
from shapes_pipeline.helpers.dataset import SPLITS, DataError, Example

SEEDS = st.integers(-(2**40), 2**40)


@st.composite
def manifests(draw, max_per_split: int = 12, classes: int = 3) -> list[Example]:
    """Examples in the order split writes them: class by class, split by split."""
    labels = [f"c{i}" for i in range(draw(st.integers(1, classes)))]
    examples = []
    for label in labels:
        for split in SPLITS:
            for i in range(draw(st.integers(0, max_per_split))):
                examples.append(Example(f"{split}/{label}/{i}.png", label, split, f"{label}{i}"))
    return examples


def _total(rows: list[int], sizes: list[int]) -> int:
    return sum(sizes[r] for r in rows)


@given(examples=manifests(), data=st.data(), limit=st.integers(1, 8000), seed=SEEDS)
def test_plan_cuts_each_split_where_a_shard_reaches_shard_mb(examples, data, limit, seed):
    """Every manifest row is in exactly one shard, of its own split and named for it; a shard
    is cut at the first record that takes it to ``shard_mb`` (so every shard but a split's
    last reaches it, and none would without its last record); the plan is a pure function."""
    sizes = data.draw(
        st.lists(st.integers(1, 3000), min_size=len(examples), max_size=len(examples))
    )
    shard_mb = limit / 1e6
    planned = shards.plan(examples, sizes, shard_mb, seed)
    assert planned == shards.plan(examples, list(sizes), shard_mb, seed)
    rows = sorted(r for _, group in planned for r in group)
    assert rows == list(range(len(examples)))
    for split in SPLITS:
        mine = [(name, group) for name, group in planned if name.startswith(f"{split}/")]
        assert [name for name, _ in mine] == [
            f"{split}/{split}-{n:05d}.tfrecord" for n in range(len(mine))
        ]
        assert all(group and {examples[r].split for r in group} == {split} for _, group in mine)
        for n, (_, group) in enumerate(mine):
            assert _total(group[:-1], sizes) < shard_mb * 1_000_000
            if n < len(mine) - 1:
                assert _total(group, sizes) >= shard_mb * 1_000_000


@given(
    counts=st.lists(st.integers(50, 250), min_size=2, max_size=4),
    size_seed=st.integers(0, 2**32),
    shard_mb=st.floats(0.2, 0.4),
    seed=SEEDS,
)
def test_shards_hold_their_splits_class_mix(counts, size_seed, shard_mb, seed):
    """Shards are a seeded shuffle of their split, not manifest (class-sorted) order. A shard
    of m records is then a random sample without replacement of its split, and by Hoeffding's
    bound (which holds for such samples) a class's share in it differs from its share in the
    split by 0.35 or more with probability at most 2 exp(-2 m 0.35^2), under 3e-11 for
    m >= 100: so for every shard of at least 100 records, every class is within 0.35 of its
    split's share. In class-sorted order the first shard holds one class only and fails
    this whenever that class is under 65% of its split."""
    examples = [
        Example(f"train/c{c}/{i}.png", f"c{c}", "train", "")
        for c, n in enumerate(counts)
        for i in range(n)
    ]
    sizes = [random.Random(size_seed + r).randint(1000, 2000) for r in range(len(examples))]
    total = len(examples)
    share = {f"c{c}": n / total for c, n in enumerate(counts)}
    checked = 0
    for _, group in shards.plan(examples, sizes, shard_mb, seed):
        if len(group) < 100:
            continue
        checked += 1
        mix = Counter(examples[r].label for r in group)
        for label, p in share.items():
            assert abs(mix[label] / len(group) - p) < 0.35, (label, mix, len(group), counts)
    assert checked  # a split's first shard holds at least 100 records (0.2 MB / 2000 bytes)


def _index(n: int) -> dict:
    return {
        "shard_mb": 1.0,
        "classes": ["a"],
        "shards": [
            {
                "file": f"train/train-{i:05d}.tfrecord",
                "split": "train",
                "count": 1,
                "bytes": 1,
                "classes": {"a": 1},
            }
            for i in range(n)
        ],
    }


@given(n=st.integers(0, 30), workers=st.integers(1, 40))
def test_extract_groups_read_every_shard_exactly_once(n, workers):
    """``groups`` runs min(workers, shards) tasks; over them, ``of_group`` gives every shard
    to exactly one task, the tasks' loads differ by one at most, and a rerun (the index read
    again) gives each task the same shards."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, shards.INDEX).write_text(json.dumps(_index(n)))
        planned = shards.groups(tmp, workers)
        assert planned == list(range(min(workers, n)))
        index = shards.read_index(tmp)
        read = [[s["file"] for s in shards.of_group(index, g, workers)] for g in planned]
        again = [
            [s["file"] for s in shards.of_group(shards.read_index(tmp), g, workers)]
            for g in planned
        ]
    assert read == again
    every = [f for files in read for f in files]
    assert sorted(every) == sorted(s["file"] for s in index["shards"])
    assert len(every) == len(set(every))
    assert not read or max(map(len, read)) - min(map(len, read)) <= 1


def _records(path: Path) -> list:
    """The tf.train.Examples of a TFRecord file, their framing and CRCs checked, without
    TensorFlow."""
    data, at, found = path.read_bytes(), 0, []
    while at < len(data):
        header = data[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        assert data[at + 8 : at + 12] == tfrecord._masked_crc(header)
        record = data[at + 12 : at + 12 + length]
        assert data[at + 12 + length : at + 16 + length] == tfrecord._masked_crc(record)
        found.append(tfrecord._Example.FromString(record).features.feature)
        at += 16 + length
    return found


@settings(max_examples=30)
@given(
    examples=manifests(max_per_split=5),
    data=st.data(),
    limit=st.integers(1, 3000),
    seed=st.integers(0, 2**32),
)
def test_written_shards_hold_each_row_once_and_their_index_counts_their_records(
    examples, data, limit, seed
):
    """``shards.write``: every manifest row's record is in exactly one shard of its split,
    holding the file's bytes and its label, class and path; shards.json's count, bytes
    and per-class counts are the records' own (no zero counts), and it reads back as
    written."""
    assume(examples)
    payloads = data.draw(
        st.lists(
            st.binary(min_size=1, max_size=600), min_size=len(examples), max_size=len(examples)
        )
    )
    classes = sorted({e.label for e in examples} | {"unused"})
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for row, payload in enumerate(payloads):
            files.append(Path(tmp, f"in-{row}.png"))
            files[-1].write_bytes(payload)
        out = Path(tmp, "out")
        sources = [f"{e.label}/{i}" for i, e in enumerate(examples)]
        index = shards.write(out, examples, files, sources, classes, limit / 1e6, seed)
        assert shards.read_index(out) == json.loads(json.dumps(index))
        seen = []
        for shard in index["shards"]:
            path = out / shard["file"]
            assert shards.checked(path, shard["bytes"]) == str(path)
            records = _records(path)
            assert shard["count"] == len(records) and shard["bytes"] == path.stat().st_size
            mix = Counter(r["class"].bytes_list.value[0].decode() for r in records)
            assert shard["classes"] == dict(mix) and all(shard["classes"].values())
            for r in records:
                row = r["row"].int64_list.value[0]
                e = examples[row]
                seen.append(row)
                assert e.split == shard["split"] and shard["file"].startswith(f"{e.split}/")
                assert r["image"].bytes_list.value[0] == payloads[row]
                assert r["label"].int64_list.value[0] == classes.index(e.label)
                assert r["class"].bytes_list.value[0].decode() == e.label
                assert r["path"].bytes_list.value[0].decode() == e.path
                assert r["source"].bytes_list.value[0].decode() == sources[row]
        assert sorted(seen) == list(range(len(examples)))


@given(expected=st.integers(0, 50), counted=st.integers(0, 50))
def test_a_record_count_other_than_the_index_is_one_error_naming_the_shard(expected, counted):
    path = Path("ds/train/train-00003.tfrecord")
    if expected == counted:
        shards.count_records(path, expected, counted)
        return
    with pytest.raises(DataError) as error:
        shards.count_records(path, expected, counted)
    assert str(error.value).startswith(f"{path}: truncated or corrupt shard")
    assert f"{counted} records, expected {expected}" in str(error.value)
