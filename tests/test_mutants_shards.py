"""The shard index's promises to extract and train, pinned where mutation testing found
them unchecked: the cut at exactly ``shard_mb``, the errors naming a missing index or a
missing or cut shard and the repair, shards.json as the one record of what was
written, and every feature of every record. Tiny files; TensorFlow only to read records
back as training does."""

import json
import tempfile
from pathlib import Path

import pytest
from helpers import tree_bytes
from hypothesis import given
from hypothesis import strategies as st

from shapes_pipeline.helpers import shards
from shapes_pipeline.helpers.dataset import DataError, Example


def _examples(n: int, split: str = "train") -> list[Example]:
    return [Example(f"{split}/a/{i}.png", "a", split, f"h{i}") for i in range(n)]


@given(
    per_shard=st.sampled_from([1, 2, 4, 5, 8, 10]),
    shard_mb=st.sampled_from([1.0, 2.0, 0.5]),
    shards_=st.integers(1, 4),
    extra=st.integers(0, 1),
)
def test_a_shard_is_cut_when_it_reaches_shard_mb_exactly(per_shard, shard_mb, shards_, extra):
    """Records of equal size that fill ``shard_mb`` (in MB of 10^6 bytes) exactly: every
    shard holds that many (the one that reaches the size ends the shard, not the one after
    it), and a record left over starts a shard of its own."""
    size = int(shard_mb * 1_000_000) // per_shard
    n = per_shard * shards_ + extra
    planned = shards.plan(_examples(n), [size] * n, shard_mb, seed=0)
    assert [len(rows) for _, rows in planned] == [per_shard] * shards_ + [1] * extra


def test_a_missing_index_says_the_folder_is_no_sharded_data_set(tmp_path):
    with pytest.raises(DataError) as error:
        shards.read_index(tmp_path)
    assert str(error.value) == (
        f"{tmp_path}: no shards.json; not a sharded data set (split it again)"
    )
    with pytest.raises(DataError, match="no shards.json"):
        shards.groups(tmp_path, 4)


@given(written=st.integers(0, 64), recorded=st.integers(0, 64))
def test_a_shard_is_read_only_at_its_recorded_size(written, recorded):
    """``checked`` gives the shard's path (for TensorFlow to open) when its size is the one
    shards.json records; otherwise one line naming it, both sizes, and what it means; and
    a shard that is not there is named as missing."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "train", "train-00002.tfrecord")
        with pytest.raises(DataError) as error:
            shards.checked(path, recorded)
        assert str(error.value) == f"{path}: shard missing"
        path.parent.mkdir()
        path.write_bytes(b"r" * written)
        if written == recorded:
            assert shards.checked(path, recorded) == str(path)
            return
        with pytest.raises(DataError) as error:
            shards.checked(path, recorded)
    assert str(error.value) == (
        f"{path}: truncated or corrupt shard ({written} bytes, expected {recorded})"
    )


def test_shards_json_is_the_index_write_returns(tmp_path):
    """Extract and train know a data set only through shards.json: it holds exactly what
    ``write`` returned (shard size asked for, classes in label order, every shard), read
    back equal by ``read_index``; the files it names are there, at their recorded size. The
    same seed writes the same bytes again (a rerun reproduces the data set)."""
    examples = _examples(5) + _examples(2, "val") + _examples(3, "test")
    files = []
    for row in range(len(examples)):
        files.append(tmp_path / f"in-{row}.png")
        files[-1].write_bytes(bytes([row]) * (10 + row))
    out = tmp_path / "out"
    sources = [f"a/{r}" for r in range(10)]
    index = shards.write(out, examples, files, sources, ["a", "z"], 2e-5, 1)
    on_disk = json.loads((out / shards.INDEX).read_text())
    assert on_disk == index == shards.read_index(out)
    assert on_disk["shard_mb"] == 2e-5 and on_disk["classes"] == ["a", "z"]
    assert [s["split"] for s in on_disk["shards"]] == sorted(
        (s["split"] for s in on_disk["shards"]), key=["train", "val", "test"].index
    )
    for shard in on_disk["shards"]:
        assert shards.checked(out / shard["file"], shard["bytes"]) == str(out / shard["file"])
        assert shard["classes"] == {"a": shard["count"]}
    assert sum(s["count"] for s in on_disk["shards"]) == 10 and len(on_disk["shards"]) > 3
    again = shards.write(tmp_path / "again", examples, files, sources, ["a", "z"], 2e-5, 1)
    assert again == index and tree_bytes(tmp_path / "again") == tree_bytes(out)


def test_each_record_holds_its_rows_bytes_label_names_and_hash(tmp_path):
    """Every record is one manifest row whole: the file's own bytes, the label's index in
    the class order, the row, the class, the data set path, the source path and the sha256
    (which a feature store keys images by), read back as TensorFlow reads them."""
    import tensorflow as tf

    examples = [
        Example(f"{s}/{c}/{i}.png", c, s, f"{i:064x}")
        for i, (s, c) in enumerate([("train", "b"), ("train", "a"), ("val", "b"), ("test", "a")])
    ]
    files = []
    for row in range(len(examples)):
        files.append(tmp_path / f"in-{row}.png")
        files[-1].write_bytes(bytes([row + 1]) * (5 + row))
    sources = [f"src/{r}.png" for r in range(len(examples))]
    index = shards.write(tmp_path / "out", examples, files, sources, ["a", "b"], 1.0, 3)
    seen = set()
    for shard in index["shards"]:
        for record in tf.data.TFRecordDataset(str(tmp_path / "out" / shard["file"])):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            row = feature["row"].int64_list.value[0]
            e = examples[row]
            assert feature["image"].bytes_list.value == [files[row].read_bytes()]
            assert feature["label"].int64_list.value == [["a", "b"].index(e.label)]
            assert feature["class"].bytes_list.value == [e.label.encode()]
            assert feature["path"].bytes_list.value == [e.path.encode()]
            assert feature["source"].bytes_list.value == [sources[row].encode()]
            assert feature["sha256"].bytes_list.value == [e.sha256.encode()]
            assert shard["split"] == e.split and row not in seen
            seen.add(row)
    assert seen == set(range(len(examples)))
