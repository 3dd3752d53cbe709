"""Zip input: checked entry by entry before anything is unpacked, and refused in one line
naming the entry when it is unsafe or cannot be read."""

import stat
import zipfile
from pathlib import Path

import pytest
from helpers import FAST, cli_here, registry_with_a_version, tree_bytes

from shapes_pipeline.helpers import archive
from shapes_pipeline.helpers.dataset import DataError, read_manifest
from shapes_pipeline.steps.split import split_dataset

SPLIT = {"seed": 230, "train_fraction": 0.8, "val_fraction": 0.1}


def zip_folder(folder: Path, archive: Path, top: str = "shapes") -> Path:
    """The Kaggle layout: everything under one top-level folder."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, f"{top}/{path.relative_to(folder).as_posix()}")
    return archive


def test_a_zip_of_the_kaggle_layout_splits_like_the_folder(demo_data, split_dir, tmp_path):
    archive = zip_folder(demo_data, tmp_path / "shapes.zip")
    facts = split_dataset(str(archive), str(tmp_path / "out"), **SPLIT)
    assert facts["source"] == str(archive)
    assert read_manifest(tmp_path / "out") == read_manifest(split_dir)


def test_a_zip_on_gcs(demo_data, split_dir, tmp_path, bucket):
    archive = zip_folder(demo_data, tmp_path / "shapes.zip")
    bucket.blob("raw/shapes.zip").upload_from_filename(str(archive))
    split_dataset(f"gs://{bucket.name}/raw/shapes.zip", str(tmp_path / "out"), **SPLIT)
    assert read_manifest(tmp_path / "out") == read_manifest(split_dir)


def _with_entry(demo_data: Path, archive: Path, name: str, data: bytes, mode: int = 0) -> Path:
    zip_folder(demo_data, archive)
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = mode << 16
        z.writestr(info, data)
    return archive


@pytest.mark.parametrize(
    ("name", "data", "mode", "message"),
    [
        ("../evil.png", b"x", 0, "entry '../evil.png' would be written outside"),
        ("shapes/../../evil.png", b"x", 0, "would be written outside"),
        ("/etc/evil.png", b"x", 0, "entry '/etc/evil.png' would be written outside"),
        ("shapes/circles/link.png", b"/etc/passwd", stat.S_IFLNK | 0o777, "symbolic link"),
        ("shapes/circles/bomb.png", b"\0" * 50 * 2**20, 0, "a zip bomb?"),
    ],
    ids=["parent", "nested-parent", "absolute", "symlink", "bomb"],
)
def test_unsafe_archives_are_refused_before_anything_is_written(
    demo_data, tmp_path, name, data, mode, message
):
    archive = _with_entry(demo_data, tmp_path / "in" / "shapes.zip", name, data, mode)
    with pytest.raises(DataError) as error:
        split_dataset(str(archive), str(tmp_path / "out"), **SPLIT)
    assert str(archive) in str(error.value) and message in str(error.value)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["in", "shapes.zip"]


def test_a_file_that_is_not_a_zip(tmp_path):
    (tmp_path / "data.zip").write_text("not a zip")
    with pytest.raises(DataError, match="data.zip: not a readable zip archive"):
        split_dataset(str(tmp_path / "data.zip"), str(tmp_path / "out"), **SPLIT)
    with pytest.raises(DataError, match="missing.zip: no such file"):
        split_dataset(str(tmp_path / "missing.zip"), str(tmp_path / "out"), **SPLIT)


def test_the_cli_refuses_a_zip_bomb_in_one_line(demo_data, tmp_path):
    archive = _with_entry(demo_data, tmp_path / "shapes.zip", "shapes/b.png", b"\0" * 50 * 2**20)
    before = registry_with_a_version(tmp_path / "reg")
    done = cli_here("run", "--data", str(archive), "--registry", "reg", *FAST, cwd=tmp_path)
    assert done.returncode == 2 and "a zip bomb?" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "runs").exists()
    assert tree_bytes(tmp_path / "reg") == before


@pytest.mark.parametrize(
    "limits, message",
    [
        (archive.Limits(entries=3), "4 entries, more than 3"),
        (archive.Limits(total_bytes=3000), "inflates to more than 3000 bytes"),
        (archive.Limits(ratio=10, ratio_from_bytes=1000), "(more than 10x): a zip bomb?"),
    ],
    ids=["entries", "total-size", "ratio"],
)
def test_each_archive_limit_refuses_an_archive_past_it(tmp_path, limits, message):
    """Small limits, small archives: each limit trips on its own, before anything is
    unpacked; the same archive passes the default limits."""
    path = tmp_path / "small.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(4):
            z.writestr(f"shapes/a/{i}.png", bytes([i]) * 2000)  # 2000 bytes -> about 20
    with pytest.raises(DataError) as error:
        archive.extract(path, tmp_path / "out", shown_as="small.zip", limits=limits)
    assert str(error.value).startswith("small.zip: ") and message in str(error.value)
    assert not (tmp_path / "out").exists()
    assert archive.extract(path, tmp_path / "ok", shown_as="small.zip").name == "shapes"


def _patched(path: Path, field: str, value: int) -> None:
    """The first entry's ``flags`` or compression ``method``, in both of its headers (as
    another archiver would write them: Python's zipfile writes neither encryption nor AES)."""
    data = bytearray(path.read_bytes())
    offsets = {"flags": (6, 8), "method": (8, 10)}[field]
    for signature, offset in zip((b"PK\x03\x04", b"PK\x01\x02"), offsets, strict=True):
        at = data.index(signature) + offset
        data[at : at + 2] = value.to_bytes(2, "little")
    path.write_bytes(bytes(data))


def _entries(path: Path, names: list[str], data: bytes = b"x") -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in names:
            z.writestr(name, data)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: [_entries(p, ["shapes/a/1.png"]), _patched(p, "flags", 0x1)],
            "'shapes/a/1.png' is encrypted",
        ),
        (
            lambda p: [_entries(p, ["shapes/a/1.png"]), _patched(p, "method", 99)],
            "uses compression method 99, which cannot be read here",
        ),
        (
            lambda p: _entries(p, ["shapes/a", "shapes/a/1.png"]),
            "'shapes/a' is both a file and a folder",
        ),
        (
            lambda p: _entries(p, [f"shapes/a/{'x' * 300}.png"]),
            "has a name longer than 255 bytes",
        ),
    ],
    ids=["encrypted", "compression-method", "file-and-folder", "name-too-long"],
)
def test_archives_that_cannot_be_unpacked_are_one_line(tmp_path, make, message):
    path = tmp_path / "data.zip"
    make(path)
    with pytest.raises(DataError) as error:
        archive.extract(path, tmp_path / "out", shown_as="data.zip")
    assert str(error.value).startswith("data.zip: ") and message in str(error.value)
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()
    before = registry_with_a_version(tmp_path / "reg")
    done = cli_here("run", "--data", str(path), "--registry", "reg", *FAST, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr
    assert tree_bytes(tmp_path / "reg") == before and not (tmp_path / "runs").exists()


def test_the_ratio_limit_also_holds_for_the_archive_as_a_whole(tmp_path):
    """Each entry below the size from which its own ratio is checked; all of them past it."""
    path = tmp_path / "many.zip"
    _entries(path, [f"shapes/a/{i}.png" for i in range(4)], data=b"\0" * 2000)
    limits = archive.Limits(ratio=10, ratio_from_bytes=5000)
    with pytest.raises(DataError, match=r"inflate \d+ bytes to 8000 \(more than 10x as a whole"):
        archive.extract(path, tmp_path / "out", shown_as="many.zip", limits=limits)
    assert not (tmp_path / "out").exists()
