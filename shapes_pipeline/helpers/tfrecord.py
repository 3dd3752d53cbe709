"""TFRecord files of ``tf.train.Example``s, written without importing TensorFlow.

Split only writes records, and importing TensorFlow for that cost it most of its time and
memory. The records are the ones ``tf.io.TFRecordWriter`` writes: ``tf.data`` reads them
and checks their CRCs, and ``tf.io.parse_example`` parses them (tests read them back that
way). The Example schema is TensorFlow's ``example.proto`` (the fields split and extract
use), built in a descriptor pool of its own so it cannot clash with TensorFlow's copy
when both are loaded; protobuf serialises it, google-crc32c checksums it.
"""

from __future__ import annotations

import struct
from pathlib import Path
from types import TracebackType

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

# tensorflow/core/example/{example,feature}.proto: the same names and field numbers.
_SCHEMA = """
name: "shapes_pipeline/example.proto" package: "tensorflow" syntax: "proto3"
message_type {
  name: "BytesList"
  field { name: "value" number: 1 label: LABEL_REPEATED type: TYPE_BYTES }
}
message_type {
  name: "Int64List"
  field {
    name: "value" number: 1 label: LABEL_REPEATED type: TYPE_INT64 options { packed: true }
  }
}
message_type {
  name: "Feature"
  field { name: "bytes_list" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.BytesList" oneof_index: 0 }
  field { name: "int64_list" number: 3 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.Int64List" oneof_index: 0 }
  oneof_decl { name: "kind" }
}
message_type {
  name: "Features"
  field { name: "feature" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".tensorflow.Features.FeatureEntry" }
  nested_type {
    name: "FeatureEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
            type_name: ".tensorflow.Feature" }
    options { map_entry: true }
  }
}
message_type {
  name: "Example"
  field { name: "features" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.Features" }
}
"""
_pool = descriptor_pool.DescriptorPool()
_pool.Add(text_format.Parse(_SCHEMA, descriptor_pb2.FileDescriptorProto()))
_Example = message_factory.GetMessageClass(_pool.FindMessageTypeByName("tensorflow.Example"))


def example(**features: list[bytes] | list[int]) -> bytes:
    """A serialised ``tf.train.Example``: each feature a list of bytes or of ints."""
    message = _Example()
    for name, values in features.items():
        feature = message.features.feature[name]
        kind = feature.bytes_list if isinstance(values[0], bytes) else feature.int64_list
        kind.value.extend(values)
    return message.SerializeToString(deterministic=True)  # map keys sorted: same input, same bytes


def _masked_crc(data: bytes) -> bytes:
    """The record format's checksum: CRC-32C, rotated and offset (TensorFlow's ``crc32c::Mask``)."""
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


class Writer:
    """A TFRecord file, one record per ``write``: length, its CRC, the data, its CRC."""

    def __init__(self, path: str | Path):
        self._file = open(path, "wb")  # noqa: SIM115 (closed by __exit__)

    def write(self, record: bytes) -> None:
        length = struct.pack("<Q", len(record))
        self._file.write(length + _masked_crc(length) + record + _masked_crc(record))

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self, kind: type | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._file.close()
