"""Split semantics: the notebook's exact train/test rule, a clean validation carve, clear errors."""

import csv
import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import tensorflow as tf

from shapes_pipeline.helpers import shards
from shapes_pipeline.helpers.dataset import DataError, class_names, read_manifest, sha256_of
from shapes_pipeline.helpers.demo_data import generate
from shapes_pipeline.steps.split import (
    carve_validation,
    content_checks,
    notebook_split,
    split_dataset,
)


def notebook(files: list[str]) -> tuple[list[str], list[str]]:
    """The notebook's own code, line for line (module-level random, seeded before the sort)."""
    files = list(files)
    random.seed(230)
    files.sort()
    random.shuffle(files)
    split_train = int(0.8 * len(files))
    return files[:split_train], files[split_train:]


def kaggle_names(prefix: str, n: int = 100) -> list[str]:
    return [f"{prefix}{i}.png" for i in range(n)]


@pytest.mark.parametrize(
    "names", [kaggle_names("drawing("), kaggle_names("x", 37), ["b.png", "a.png"]]
)
def test_train_test_split_is_the_notebooks(names):
    shuffled = random.Random(5).sample(names, len(names))  # os.listdir order is arbitrary
    assert notebook_split(shuffled, 230, 0.8) == notebook(names)


# Pinned to data, not to a copy of the rule: twelve files in the order a directory listing
# might give them, and where the notebook's own code (``notebook`` above, run once with each
# seed) put them. Any change to the rule (seed handling, sort, cut) or to the validation
# carve changes these lists.
UNSORTED = [f"drawing({i}).png" for i in (6, 11, 3, 2, 9, 1, 10, 0, 8, 7, 5, 4)]
PINNED = {
    230: {
        "train": [f"drawing({i}).png" for i in (7, 1, 4, 5, 11, 3, 0, 6)],
        "val": ["drawing(8).png"],
        "test": ["drawing(2).png", "drawing(10).png", "drawing(9).png"],
    },
    7: {
        "train": [f"drawing({i}).png" for i in (5, 9, 11, 8, 6, 7, 1, 0)],
        "val": ["drawing(2).png"],
        "test": ["drawing(4).png", "drawing(10).png", "drawing(3).png"],
    },
}


@pytest.mark.parametrize("seed", sorted(PINNED))
def test_split_of_a_known_file_list_is_pinned(seed):
    train, test = notebook_split(UNSORTED, seed, 0.8)
    assert test == PINNED[seed]["test"]
    assert carve_validation(train, seed, 0.1) == (PINNED[seed]["train"], PINNED[seed]["val"])


def test_another_seed_gives_another_split():
    assert PINNED[230]["test"] != PINNED[7]["test"]
    assert notebook_split(UNSORTED, 230, 0.8) != notebook_split(UNSORTED, 7, 0.8)


@pytest.mark.parametrize("seed", sorted(PINNED))
def test_split_step_writes_the_pinned_split(seed, demo_data, tmp_path):
    """The whole step, not only the rule: files named as in ``UNSORTED`` in every class."""
    for label in ("circles", "squares", "triangles"):
        files = sorted((demo_data / label).iterdir())[:12]
        (tmp_path / "src" / label).mkdir(parents=True)
        for file, name in zip(files, UNSORTED, strict=True):
            shutil.copyfile(file, tmp_path / "src" / label / name)
    split_dataset(
        str(tmp_path / "src"), str(tmp_path / "out"), seed=seed, train_fraction=0.8,
        val_fraction=0.1,
    )  # fmt: skip
    sources = shard_sources(tmp_path / "out")
    for label in ("circles", "squares", "triangles"):
        for part, expected in PINNED[seed].items():
            written = sorted(
                Path(src).name
                for src, split in sources
                if src.startswith(label + "/") and split == part
            )
            assert written == sorted(expected)


def shard_sources(dataset_dir: Path) -> list[tuple[str, str]]:
    """(source path, split) of every record in the data set's shards."""
    import tensorflow as tf

    found = []
    for shard in shards.read_index(dataset_dir)["shards"]:
        for record in tf.data.TFRecordDataset(str(dataset_dir / shard["file"])):
            example = tf.train.Example.FromString(record.numpy())
            source = example.features.feature["source"].bytes_list.value[0].decode()
            found.append((source, shard["split"]))
    return found


def test_validation_is_carved_from_train_only_and_deterministic():
    train = [f"{i}.png" for i in range(80)]
    kept, val = carve_validation(train, 230, 0.1)
    assert len(val) == 8 and not set(kept) & set(val) and sorted(kept + val) == sorted(train)
    assert carve_validation(train, 230, 0.1) == (kept, val)
    assert carve_validation(train, 231, 0.1)[1] != val


def test_split_writes_shards_and_manifest(demo_data, split_dir):
    examples = read_manifest(split_dir)
    assert class_names(examples) == ["circles", "squares", "triangles"]
    for label in ("circles", "squares", "triangles"):
        by_split = {
            s: [e for e in examples if e.label == label and e.split == s]
            for s in ("train", "val", "test")
        }
        assert [len(by_split[s]) for s in ("train", "val", "test")] == [8, 1, 3]
        originals = sorted(os.listdir(demo_data / label))
        _, expected_test = notebook(originals)
        assert sorted(Path(e.path).name for e in by_split["test"]) == sorted(expected_test)
    records = {}
    for shard in shards.read_index(split_dir)["shards"]:
        for record in tf.data.TFRecordDataset(str(split_dir / shard["file"])):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            row = feature["row"].int64_list.value[0]
            assert row not in records
            records[row] = (shard["split"], {k: v for k, v in feature.items()})
    assert sorted(records) == list(range(len(examples)))
    classes = class_names(examples)
    for row, e in enumerate(examples):
        split, feature = records[row]
        image = feature["image"].bytes_list.value[0]
        original = demo_data / e.label / Path(e.path).name
        assert e.path == f"{e.split}/{e.label}/{Path(e.path).name}" and split == e.split
        assert image == original.read_bytes()  # the file's own bytes, not re-encoded
        assert hashlib.sha256(image).hexdigest() == e.sha256 == sha256_of(original)
        assert feature["sha256"].bytes_list.value[0].decode() == e.sha256
        assert feature["label"].int64_list.value[0] == classes.index(e.label)
        assert feature["class"].bytes_list.value[0].decode() == e.label
        assert feature["path"].bytes_list.value[0].decode() == e.path
        assert feature["source"].bytes_list.value[0].decode() == f"{e.label}/{original.name}"
    with open(split_dir / "manifest.csv") as f:
        assert next(csv.reader(f)) == ["path", "class", "split", "sha256"]


def test_shards_are_cut_at_shard_mb_and_indexed_per_class(demo_data, tmp_path):
    facts = split_dataset(
        str(demo_data), str(tmp_path / "out"), seed=230, train_fraction=0.8, val_fraction=0.1,
        shard_mb=0.004,
    )  # fmt: skip
    index = shards.read_index(tmp_path / "out")
    assert facts["shards"] == len(index["shards"]) > 3
    examples = read_manifest(tmp_path / "out")
    for split in ("train", "val", "test"):
        mine = [s for s in index["shards"] if s["split"] == split]
        assert [s["file"] for s in mine] == [
            f"{split}/{split}-{n:05d}.tfrecord" for n in range(len(mine))
        ]
        totals = {c: sum(s["classes"].get(c, 0) for s in mine) for c in index["classes"]}
        assert totals == facts["counts"][split]
        assert sum(s["count"] for s in mine) == sum(e.split == split for e in examples)
    for shard in index["shards"]:
        assert (tmp_path / "out" / shard["file"]).stat().st_size == shard["bytes"]
        # cut once past the target: at most one image beyond it
        assert shard["count"] == 1 or shard["bytes"] < 0.004e6 + 2 * max_image_bytes(demo_data)
    train_shards = [s for s in index["shards"] if s["split"] == "train"]
    assert any(len(s["classes"]) > 1 for s in train_shards)  # shuffled, not one class per shard


def max_image_bytes(folder: Path) -> int:
    return max(p.stat().st_size for p in folder.rglob("*.png"))


@pytest.mark.slow
def test_the_manifest_of_the_demo_data_is_the_one_before_sharding(tmp_path):
    """300 demo images (``generate(per_class=100, seed=0)``): the manifest the per-file
    layout wrote (its sha256, measured with the code before sharding) is still written."""
    generate(str(tmp_path / "demo"), per_class=100, seed=0)
    facts = split_dataset(
        str(tmp_path / "demo"), str(tmp_path / "out"), seed=230, train_fraction=0.8,
        val_fraction=0.1,
    )  # fmt: skip
    assert facts["manifest_sha256"] == (
        "4f551bf7d64a43ca9a61e17ddd3e83af4917c6d992ec3ac40398ac005509d044"
    )


def test_any_number_of_classes(tmp_path):
    src = tmp_path / "src"
    generate(str(src), per_class=5, seed=3)
    generate(str(tmp_path / "more"), per_class=5, seed=4)
    for old, new in (("circles", "d"), ("squares", "e")):  # five classes, all images distinct
        shutil.move(tmp_path / "more" / old, src / new)
    facts = split_dataset(
        str(src), str(tmp_path / "out"), seed=230, train_fraction=0.8, val_fraction=0.1
    )
    assert facts["classes"] == ["circles", "d", "e", "squares", "triangles"]
    assert facts["counts"]["test"] == dict.fromkeys(facts["classes"], 1)


def _bad(tmp_path, demo_data, mutate) -> Path:
    src = tmp_path / "bad"
    shutil.copytree(demo_data, src)
    mutate(src)
    return src


@pytest.mark.parametrize(
    "mutate, named",
    [
        (lambda s: [shutil.rmtree(s / "squares"), shutil.rmtree(s / "triangles")], "bad"),
        (lambda s: [p.unlink() for p in (s / "squares").iterdir()], "squares"),
        (lambda s: (s / "squares" / "broken.png").write_text("not an image"), "broken.png"),
        (
            lambda s: (s / "circles" / "cut.png").write_bytes(
                (s / "circles" / "circle_000.png").read_bytes()[:60]
            ),
            "cut.png",
        ),
        (lambda s: [p.unlink() for p in sorted((s / "triangles").iterdir())[1:]], "triangles"),
        (
            lambda s: shutil.copyfile(s / "circles" / "circle_000.png", s / "squares" / "sq.png"),
            "squares/sq.png",
        ),
    ],
    ids=[
        "one-class",
        "empty-class",
        "not-an-image",
        "truncated",
        "too-few-images",
        "image-in-two-classes",
    ],
)
def test_bad_input_names_the_path_and_writes_nothing(tmp_path, demo_data, mutate, named):
    src = _bad(tmp_path, demo_data, mutate)
    out = tmp_path / "out"
    with pytest.raises(DataError) as error:
        split_dataset(str(src), str(out), seed=230, train_fraction=0.8, val_fraction=0.1)
    assert named in str(error.value) and "\n" not in str(error.value)
    assert not out.exists()


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no-such-folder"):
        split_dataset(
            str(tmp_path / "no-such-folder"),
            str(tmp_path / "out"),
            seed=230,
            train_fraction=0.8,
            val_fraction=0.1,
        )


PLAN = {
    "a": {"train": ["1.png", "2.png", "3.png"], "val": ["4.png"], "test": ["5.png"]},
    "b": {"train": ["1.png", "2.png"], "val": ["3.png"], "test": ["4.png"]},
}


def _hashes(*same: tuple[str, str]) -> dict[tuple[str, str], str]:
    """Distinct content for every file except the ``same`` ones, which share one hash."""
    hashes = {
        (label, file): f"{label}/{file}"
        for label, parts in PLAN.items()
        for files in parts.values()
        for file in files
    }
    return {**hashes, **dict.fromkeys(same, "shared")}


def test_copies_inside_a_class_and_one_split_are_a_warning():
    (warning,) = content_checks(_hashes(("a", "1.png"), ("a", "2.png")), PLAN, "src")
    assert "duplicate" in warning and "src/a/1.png" in warning and "src/a/2.png" in warning
    assert content_checks(_hashes(), PLAN, "src") == []


@pytest.mark.parametrize(
    "same, message",
    [
        ((("a", "1.png"), ("b", "1.png")), "in two classes: src/a/1.png, src/b/1.png"),
        ((("a", "2.png"), ("a", "5.png")), "both training and test data: src/a/2.png, src/a/5.png"),
        ((("a", "4.png"), ("a", "5.png")), "both training and test data: src/a/4.png, src/a/5.png"),
    ],
    ids=["two-classes", "train-and-test", "val-and-test"],
)
def test_leaks_are_errors_naming_the_files(same, message):
    with pytest.raises(DataError, match=message):
        content_checks(_hashes(*same), PLAN, "src")


def test_class_imbalance_beyond_three_is_a_warning():
    plan = {**PLAN, "b": {"train": ["1.png"], "val": [], "test": []}}
    hashes = {k: v for k, v in _hashes().items() if k[0] == "a" or k == ("b", "1.png")}
    (warning,) = content_checks(hashes, plan, "src")
    assert "class imbalance: a has 5 images, b 1" in warning
    assert content_checks(_hashes(), PLAN, "src") == []  # 5 against 4: fine


def test_split_facts_are_written_for_the_report(split_dir):
    facts = json.loads((split_dir / "split.json").read_text())
    assert facts["warnings"] == [] and facts["counts"]["test"] == dict.fromkeys(facts["classes"], 3)
