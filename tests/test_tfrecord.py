"""TFRecords written without TensorFlow are TensorFlow's own, and split does not load it."""

import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from shapes_pipeline.helpers import tfrecord

RECORDS = [
    tfrecord.example(image=[b"\x89PNG..."], label=[2], row=[7], path=[b"train/a/x.png"]),
    tfrecord.example(features=[bytes(range(256)) * 3], label=[0], row=[123456789012], view=[3]),
    b"",  # an empty record
]


def test_records_are_byte_for_byte_tensorflows(tmp_path):
    """The framing (length, checksums) is exactly what tf.io.TFRecordWriter writes."""
    with tfrecord.Writer(tmp_path / "ours.tfrecord") as writer:
        for record in RECORDS:
            writer.write(record)
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for record in RECORDS:
            writer.write(record)
    assert (tmp_path / "ours.tfrecord").read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))]
    assert read == RECORDS


def test_examples_parse_as_tensorflows():
    parsed = tf.train.Example.FromString(RECORDS[0])
    expected = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\x89PNG..."])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[2])),
                "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[7])),
                "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"train/a/x.png"])),
            }
        )
    )
    assert parsed == expected
    spec = {"row": tf.io.FixedLenFeature([], tf.int64), "view": tf.io.FixedLenFeature([], tf.int64)}
    assert tf.io.parse_single_example(RECORDS[1], spec)["row"] == 123456789012


def test_a_flipped_byte_is_caught_by_the_checksum(tmp_path):
    path = tmp_path / "x.tfrecord"
    with tfrecord.Writer(path) as writer:
        writer.write(RECORDS[1])
    data = bytearray(path.read_bytes())
    data[40] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))


def test_split_does_not_import_tensorflow(demo_data, tmp_path):
    """Split writes the shards; importing TensorFlow would be most of its time and memory."""
    code = textwrap.dedent(f"""
        import sys
        from shapes_pipeline.steps.split import split_dataset
        split_dataset({str(demo_data)!r}, {str(tmp_path / "ds")!r}, seed=230,
                      train_fraction=0.8, val_fraction=0.1)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "ds" / "train" / "train-00000.tfrecord").is_file()
