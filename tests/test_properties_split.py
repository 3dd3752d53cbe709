"""Properties of the split and of the shards, for generated inputs: the notebook's rule
restated independently, partitions, determinism, no content across training and test,
the shard cut rule, the extract groups, the class mix of shuffled shards, and shards.json
against the records themselves."""

import json
import random
import shutil
import struct
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from components import shards, tfrecord
from components.dataset import SPLITS, DataError, Example, read_manifest, sha256_of
from components.split import carve_validation, notebook_split, plan_split, split_dataset

NAMES = st.lists(
    st.text("abcXYZ019_() -.", min_size=1, max_size=6).map(lambda s: s + ".png"),
    unique=True,
    max_size=40,
)
SEEDS = st.integers(-(2**40), 2**40)
FRACTIONS = st.floats(0, 1)


def notebook(files: list[str], seed: int, train_fraction: float) -> tuple[list, list]:
    """The notebook's code for one class, as it reads (its own generator, seeded first)."""
    files = list(files)
    generator = random.Random()
    generator.seed(seed)
    files.sort()
    generator.shuffle(files)
    split_train = int(train_fraction * len(files))
    return files[:split_train], files[split_train:]


def val_count(n_train: int, val_fraction: float) -> int:
    """round(val_fraction * n) of a class's train files, at least one, at most all."""
    return 0 if val_fraction <= 0 else min(n_train, max(1, round(val_fraction * n_train)))


# The split rule ----------------------------------------------------------------------------


@given(files=NAMES, seed=SEEDS, fraction=FRACTIONS, data=st.data())
def test_notebook_split_is_the_notebooks_code_whatever_the_listing_order(
    files, seed, fraction, data
):
    """The train/test rule is the notebook's, for any file names, seed and fraction, and a
    directory listing's order cannot change it (the rule sorts first)."""
    listed = data.draw(st.permutations(files))
    train, test = notebook_split(listed, seed, fraction)
    assert (train, test) == notebook(files, seed, fraction)
    assert len(train) == int(fraction * len(files))


@given(train=NAMES, seed=SEEDS, val_fraction=st.floats(-0.5, 1))
def test_validation_is_round_of_train_at_least_one_and_moves_nothing_else(
    train, seed, val_fraction
):
    """Carving validation moves exactly ``round(val_fraction * n)`` (at least one) of the
    class's train files to val, keeps the rest in their order, and is a pure function."""
    kept, val = carve_validation(train, seed, val_fraction)
    assert len(val) == val_count(len(train), val_fraction)
    assert kept == [f for f in train if f not in val] and set(val) <= set(train)
    assert sorted(kept + val) == sorted(train)
    assert carve_validation(list(train), seed, val_fraction) == (kept, val)


CLASSES = st.dictionaries(
    st.sampled_from(["circles", "squares", "triangles", "stars", "a b"]),
    st.one_of(NAMES, NAMES.filter(lambda names: len(names) >= 8)),
    min_size=1,
    max_size=4,
)


@given(
    images=CLASSES,
    seed=SEEDS,
    train_fraction=st.one_of(FRACTIONS, st.floats(0.5, 0.9)),
    val_fraction=st.one_of(st.just(0.0), st.floats(0, 0.5)),
)
def test_plan_is_a_partition_per_class_with_test_as_the_notebooks(
    images, seed, train_fraction, val_fraction
):
    """Every file of every class is in exactly one split; test is the notebook's test part
    whatever ``val_fraction`` is (validation comes from train only); a class that would
    leave a split empty is refused, naming it; and shuffling the listing changes nothing."""
    expected = {}
    for label, files in images.items():
        train, test = notebook(files, seed, train_fraction)
        n_val = val_count(len(train), val_fraction)
        expected[label] = (train, test, n_val)
    empty = [
        label
        for label, (train, test, n_val) in expected.items()
        if len(train) == n_val or not test or (val_fraction > 0 and not n_val)
    ]
    kwargs = {"seed": seed, "train_fraction": train_fraction, "val_fraction": val_fraction}
    event("refused" if empty else "planned")
    if empty:
        with pytest.raises(DataError) as error:
            plan_split(images, "src", **kwargs)
        assert f"src/{empty[0]}: " in str(error.value) and "split empty" in str(error.value)
        return
    plan = plan_split(images, "src", **kwargs)
    assert list(plan) == list(images)
    for label, files in images.items():
        train, test, n_val = expected[label]
        parts = plan[label]
        assert parts["test"] == test
        assert sorted(parts["train"] + parts["val"]) == sorted(train)
        assert len(parts["val"]) == n_val
        every = parts["train"] + parts["val"] + parts["test"]
        assert sorted(every) == sorted(files)  # none lost, none twice
    relisted = {
        label: random.Random(seed).sample(files, len(files)) for label, files in images.items()
    }
    assert plan_split(relisted, "src", **kwargs) == plan


# No content across training and test, on real image folders ----------------------------------


def _png(path: Path, content: int) -> None:
    """A 2x2 grey PNG: the same ``content`` gives byte-identical files, another does not."""
    Image.new("RGB", (2, 2), (content % 256, content // 256, 7)).save(path)


@settings(max_examples=20)
@given(
    layout=st.lists(
        st.lists(st.sampled_from(["own"] * 6 + ["copy"] * 2 + ["shared"]), min_size=3, max_size=6),
        min_size=2,
        max_size=4,
    ),
    seed=st.integers(0, 2**32),
)
def test_no_image_content_is_in_both_training_and_test(layout, seed):
    """Class ``c``'s file ``i`` is ``layout[c][i]``: its own image, a byte-identical copy of
    its class's first file, or the one image shared by every class using it. The split
    either refuses, naming every file of one offending group (one image in two classes, or
    in both training and test data) and writing nothing, or no sha256 is in both train+val
    and test; copies inside one class are warnings, and a rerun writes the same manifest."""
    labels = [f"class{c}" for c in range(len(layout))]
    content = {}  # (label, file) -> content id
    for label, keys in zip(labels, layout, strict=True):
        for i, key in enumerate(keys):
            own = labels.index(label) * 10 + (0 if key == "copy" else i)
            content[label, f"img{i}.png"] = 999 if key == "shared" else own
    groups: dict[int, list[tuple[str, str]]] = {}
    for key, value in sorted(content.items()):
        groups.setdefault(value, []).append(key)
    test_of = {
        label: set(notebook([f for c, f in content if c == label], seed, 0.8)[1])
        for label in labels
    }
    offending = {}
    for members in groups.values():
        in_test = {file in test_of[label] for label, file in members}
        if len({label for label, _ in members}) > 1:
            offending[tuple(members)] = "the same image is in two classes"
        elif len(in_test) > 1:
            offending[tuple(members)] = "in both training and test data"
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        for (label, file), value in content.items():
            (src / label).mkdir(parents=True, exist_ok=True)
            _png(src / label / file, value)
        split = {"seed": seed, "train_fraction": 0.8, "val_fraction": 0.1}
        event(f"refused: {sorted(set(offending.values()))}" if offending else "split")
        if offending:
            with pytest.raises(DataError) as error:
                split_dataset(str(src), str(out), **split)
            message = str(error.value)
            assert "\n" not in message and not out.exists()
            named = [
                (members, kind)
                for members, kind in offending.items()
                if all(f"{src}/{label}/{file}" in message for label, file in members)
            ]
            assert named and named[0][1] in message, message
            return
        facts = split_dataset(str(src), str(out), **split)
        examples = read_manifest(out)
        training = {e.sha256 for e in examples if e.split in ("train", "val")}
        assert not training & {e.sha256 for e in examples if e.split == "test"}
        for label in labels:
            mine = sorted(Path(e.path).name for e in examples if e.label == label)
            assert mine == sorted(f for c, f in content if c == label)
        for e in examples:
            assert e.sha256 == sha256_of(src / e.label / Path(e.path).name)
        copies = [m for m in groups.values() if len(m) > 1]
        assert sum("duplicate images" in w for w in facts["warnings"]) == len(copies)
        again = split_dataset(str(src), str(Path(tmp, "again")), **split)
        assert again["manifest_sha256"] == facts["manifest_sha256"]


@settings(max_examples=15)
@given(
    sizes=st.lists(st.integers(3, 6), min_size=2, max_size=3),
    seed=st.integers(0, 2**32),
    parts=st.tuples(st.sampled_from(SPLITS), st.sampled_from(SPLITS)),
    data=st.data(),
)
def test_a_copy_in_test_and_in_train_or_val_is_refused(sizes, seed, parts, data):
    """One class gets a byte-identical copy: file ``b`` made the same as file ``a``, where
    the split puts ``a`` and ``b`` in ``parts``. Refused, naming both, when one of them is
    in test and the other is not (val counts as training data); a warning otherwise."""
    images = {f"class{c}": [f"img{i}.png" for i in range(n)] for c, n in enumerate(sizes)}
    split = {"seed": seed, "train_fraction": 0.8, "val_fraction": 0.1}
    label = data.draw(st.sampled_from(sorted(images)))
    plan = plan_split(images, "src", **split)[label]
    a = data.draw(st.sampled_from(plan[parts[0]]))
    b = data.draw(st.sampled_from([f for f in plan[parts[1]] if f != a] or [None]))
    assume(b is not None)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        for c, (name, files) in enumerate(images.items()):
            (src / name).mkdir(parents=True)
            for i, file in enumerate(files):
                _png(src / name / file, c * 10 + i)
        shutil.copyfile(src / label / a, src / label / b)
        if "test" in parts and len(set(parts)) > 1:
            with pytest.raises(DataError) as error:
                split_dataset(str(src), str(out), **split)
            message = str(error.value)
            assert "in both training and test data" in message and "\n" not in message
            assert f"{src}/{label}/{a}" in message and f"{src}/{label}/{b}" in message
            assert not out.exists()
            return
        facts = split_dataset(str(src), str(out), **split)
        (warning,) = facts["warnings"]
        assert f"duplicate images (same content) in class {label}" in warning
        assert f"{src}/{label}/{a}" in warning and f"{src}/{label}/{b}" in warning


# Shards ----------------------------------------------------------------------------------------


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
