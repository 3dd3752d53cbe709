"""The registry's layout on a local folder: versions, the production pointer, resolving."""

import json

import pytest

from components import registry
from components.step import InputError


def _version(root, name: str, accuracy: float) -> None:
    folder = root / "shapes-classifier" / name
    folder.mkdir(parents=True)
    metadata = {
        "version": name,
        "uri": f"/elsewhere/{name}",
        "metrics": {"test_accuracy": accuracy},
    }
    (folder / "metadata.json").write_text(json.dumps(metadata))


def test_versions_mark_the_production_one_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _version(tmp_path / "reg", "20260101T000000Z-aaaa", 0.8)
    _version(tmp_path / "reg", "20260102T000000Z-bbbb", 0.9)
    (tmp_path / "reg" / "shapes-classifier" / ".20260103T000000Z-cccc.partial").mkdir()
    assert registry.versions("reg", "shapes-classifier")[0]["production"] is False
    registry.promote("reg", "shapes-classifier", "20260102T000000Z-bbbb", replaces=None)
    found = registry.versions("reg", "shapes-classifier")  # a relative registry path
    assert [(v["version"], v["production"]) for v in found] == [
        ("20260101T000000Z-aaaa", False),
        ("20260102T000000Z-bbbb", True),
    ]
    assert (
        registry.resolve("reg", "shapes-classifier")
        == "reg/shapes-classifier/20260102T000000Z-bbbb"
    )
    version = "reg/shapes-classifier/20260101T000000Z-aaaa"
    assert registry.resolve(version, "shapes-classifier") == version
    with pytest.raises(InputError, match="no other/LATEST"):
        registry.resolve("reg", "other")
