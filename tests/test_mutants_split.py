"""The split step's promises to the user and to the next step, pinned where mutation testing
found them unchecked: what counts as data and what is ignored (and said so), the errors
naming the exact path and the repair, the warnings' content, and the facts and files a
rerun reproduces byte for byte. Tiny real folders of 2x2 PNGs, no TensorFlow."""

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from helpers import tree_bytes, upload_folder
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from shapes_pipeline.helpers import shards
from shapes_pipeline.helpers.dataset import DataError, read_manifest
from shapes_pipeline.steps.split import (
    FACTS,
    content_checks,
    find_images,
    plan_split,
    prepare,
    scan,
    split_dataset,
)

# Four images per class: 2 train, 1 val, 1 test.
SPLIT = {"seed": 3, "train_fraction": 0.75, "val_fraction": 0.34}


def png(path: Path, content: int, size: int = 2) -> None:
    """A ``size``x``size`` PNG; the same ``content`` gives byte-identical files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (content % 256, content // 256 % 256, 7)).save(path, "PNG")


def data(root: Path, per_class: dict[str, int]) -> Path:
    """``root`` holding class folders of distinct images, ``i.png`` for i < count."""
    for c, (label, count) in enumerate(per_class.items()):
        for i in range(count):
            png(root / label / f"{i}.png", 100 * c + i + 1)
    return root


# What is data, what is ignored ---------------------------------------------------------


def test_only_images_in_class_folders_are_data_and_everything_else_is_listed(tmp_path):
    """Two classes are enough. Hidden entries, files of other types, files beside the class
    folders and sub-folders of a class (even one named like an image) are not data: the
    split holds exactly each class's visible image files (any case of suffix), and one
    warning lists every ignored entry, folders with a trailing slash, in sorted order."""
    src = data(tmp_path / "src", {"a": 4, "b": 4})
    png(src / "b" / "UPPER.PNG", 999)  # an image, whatever the suffix's case
    (src / "README.txt").write_text("about")
    (src / ".DS_Store").write_bytes(b"\0")
    png(src / ".git" / "x.png", 901)  # a hidden folder is not a class
    (src / "a" / "notes.txt").write_text("n")
    png(src / "a" / ".thumb.png", 902)  # a hidden image is not data
    png(src / "a" / "sub" / "deep.png", 903)  # sub-folders of a class are not read
    (src / "a" / "folder.png").mkdir()  # a folder, named like an image
    ignored = [".DS_Store", ".git/", "README.txt", "a/.thumb.png", "a/folder.png/"]
    ignored += ["a/notes.txt", "a/sub/"]
    expected = {"a": [f"{i}.png" for i in range(4)], "b": [f"{i}.png" for i in range(4)]}
    expected["b"].append("UPPER.PNG")

    found = scan(str(src), **SPLIT)
    assert {label: sorted(files) for label, files in found.items()} == expected
    facts = split_dataset(str(src), str(tmp_path / "out"), **SPLIT)
    assert facts["classes"] == ["a", "b"]
    assert facts["warnings"] == [
        f"ignored {len(ignored)} entries of {src} that are not images in a class folder "
        f"(sub-folders of a class are not read): {', '.join(ignored)}"
    ]
    written = sorted((e.label, Path(e.path).name) for e in read_manifest(tmp_path / "out"))
    assert written == sorted((label, f) for label, files in expected.items() for f in files)


@pytest.mark.parametrize("extra", [0, 1, 9, 10, 11, 13])
def test_the_ignored_warning_shows_ten_entries_then_how_many_more(tmp_path, extra):
    """A folder with thousands of stray files must not give a warning of thousands of
    names: the first ten (sorted), then "and N more"; none at all when nothing is ignored."""
    src = data(tmp_path / "src", {"a": 4, "b": 4})
    names = [f"stray-{i:02d}.txt" for i in range(extra)]
    for name in names:
        (src / name).write_text("x")
    _, _, warnings = prepare(src, "the-data", **SPLIT)
    if not extra:
        assert warnings == []
        return
    shown = ", ".join(names[:10]) + (f" and {extra - 10} more" if extra > 10 else "")
    assert warnings == [
        f"ignored {extra} entries of the-data that are not images in a class folder "
        f"(sub-folders of a class are not read): {shown}"
    ]


# Errors that name the path and the repair ------------------------------------------------


def test_fewer_than_two_classes_is_refused_naming_what_was_found(tmp_path):
    """A hidden folder is not a class, so one visible class is one too few."""
    src = data(tmp_path / "src", {"a": 4, ".hidden": 4})
    with pytest.raises(DataError) as error:
        scan(str(src), **SPLIT)
    assert str(error.value) == f"{src}: found 1 class folder(s) ['a'], need at least 2"


def test_a_class_folder_without_images_is_named(tmp_path):
    src = data(tmp_path / "src", {"a": 4, "b": 0})
    (src / "b").mkdir()
    (src / "b" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as error:
        scan(str(src), **SPLIT)
    assert str(error.value) == f"{src}/b: class folder has no images"


def test_an_unreadable_image_is_named_by_its_full_path(tmp_path):
    src = data(tmp_path / "src", {"a": 4, "b": 4})
    (src / "b" / "broken.png").write_text("not an image")
    with pytest.raises(DataError) as error:
        split_dataset(str(src), str(tmp_path / "out"), **SPLIT)
    assert str(error.value).startswith(f"{src}/b/broken.png: not a readable image")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("limit", [15, 16])
def test_max_pixels_reaches_the_image_check_through_scan_and_split(tmp_path, limit):
    """``max_image_pixels`` is the user's: a 4x4 image (16 pixels) passes at 16 and is
    refused at 15, by ``run``'s check (scan) and by the split step alike, naming it."""
    src = data(tmp_path / "src", {"a": 4, "b": 4})
    png(src / "b" / "big.png", 777, size=4)
    runs = [
        lambda: scan(str(src), max_pixels=limit, **SPLIT),
        lambda: split_dataset(str(src), str(tmp_path / "out"), max_pixels=limit, **SPLIT),
    ]
    for run in runs:
        if limit >= 16:
            run()
            continue
        with pytest.raises(DataError) as error:
            run()
        assert str(error.value).startswith(f"{src}/b/big.png: 4x4 pixels, more than")
        assert "max_image_pixels 15" in str(error.value)


def test_a_class_too_small_to_split_names_every_empty_split(tmp_path):
    """One image: train gets int(0.75) = 0 and so validation nothing either; both named,
    through ``run``'s check (scan) as through the plan, which names validation only when
    there is to be one."""
    src = data(tmp_path / "src", {"a": 4, "b": 1})
    message = f"{src}/b: 1 image(s) leave the train/val split empty; add images to this class"
    with pytest.raises(DataError) as error:
        scan(str(src), **SPLIT)
    assert str(error.value) == message
    no_val = {**SPLIT, "val_fraction": 0.0}  # then an empty validation split is no error
    with pytest.raises(DataError) as error:
        plan_split({"a": ["1.png", "2.png", "3.png"], "b": ["x.png"]}, "src", **no_val)
    assert str(error.value) == (
        "src/b: 1 image(s) leave the train split empty; add images to this class"
    )


@pytest.mark.parametrize(
    "name",
    ["bell\x07.png", os.fsdecode(b"latin-\xe9.png")],
    ids=["control-character", "not-utf8"],
)
@pytest.mark.parametrize("where", ["", "a"], ids=["beside-classes", "in-a-class"])
def test_a_name_a_log_line_cannot_show_is_refused_naming_its_folder(tmp_path, name, where):
    """Names that are not UTF-8 or hold control characters break later steps and log lines:
    refused before anything is written, shown escaped, naming the folder that holds them
    (the data folder as the user gave it, or its class folder), and asking for a rename."""
    src = data(tmp_path / "src", {"a": 4, "b": 4})
    (src / where / name).write_bytes(b"x")
    folder = str(src / where) if where else str(src)
    with pytest.raises(DataError) as error:
        split_dataset(str(src), str(tmp_path / "out"), **SPLIT)
    message = str(error.value)
    assert message.startswith(f"{folder}: holds {name!r}, a name that is not UTF-8"), message
    assert message.endswith("; rename it") and "\n" not in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["", "a"], ids=["a-class-folder", "an-image"])
def test_a_link_out_of_the_data_folder_is_refused_naming_link_and_target(tmp_path, where):
    """A link out of the data folder would make the data set depend on files elsewhere:
    refused, naming the link and where it leads, and saying what to do instead."""
    src = data(tmp_path / "src", {"a": 4, "b": 4})
    outside = data(tmp_path / "elsewhere", {"c": 4})
    link = src / where / ("c" if not where else "c.png")
    link.symlink_to(outside / "c" if not where else outside / "c" / "0.png")
    with pytest.raises(DataError) as error:
        split_dataset(str(src), str(tmp_path / "out"), **SPLIT)
    assert str(error.value) == (
        f"{link}: a link to {link.resolve()}, outside the data folder; copy what it "
        "points to into the folder instead"
    )


def test_a_link_inside_the_data_folder_is_data(tmp_path):
    """A link to an image elsewhere in the data folder (here a hidden store) is read as
    the image it points to."""
    src = data(tmp_path / "src", {"a": 4, "b": 4})
    png(src / ".store" / "img.png", 555)
    (src / "a" / "linked.png").symlink_to(src / ".store" / "img.png")
    assert sorted(scan(str(src), **SPLIT)["a"]) == [
        "0.png",
        "1.png",
        "2.png",
        "3.png",
        "linked.png",
    ]


@contextlib.contextmanager
def unprivileged():
    """As a user whom permissions apply to: root reads any folder, so drop to ``nobody``
    for the block (the effective uid only, restored after)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_a_class_folder_that_cannot_be_read_is_named():
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        os.chmod(tmp, 0o755)
        src = data(Path(tmp, "src"), {"a": 4, "b": 4})
        for folder in (src, src / "a", src / "b"):
            os.chmod(folder, 0o755)
        for file in src.rglob("*.png"):
            os.chmod(file, 0o644)
        os.chmod(src / "b", 0)
        try:
            with unprivileged(), pytest.raises(DataError) as error:
                find_images(src, "gs://bucket/data")
        finally:
            os.chmod(src / "b", 0o755)
    assert str(error.value) == "gs://bucket/data/b: cannot read this folder (permission denied)"


# Warnings and leaks ---------------------------------------------------------------------


def _plan(sizes: dict[str, int]) -> tuple[dict, dict]:
    """A plan with ``sizes[label]`` train files per class (other splits empty), all distinct."""
    plan = {
        label: {"train": [f"{i}.png" for i in range(n)], "val": [], "test": []}
        for label, n in sizes.items()
    }
    hashes = {(label, f): f"{label}/{f}" for label, parts in plan.items() for f in parts["train"]}
    return plan, hashes


@given(sizes=st.dictionaries(st.sampled_from("abcde"), st.integers(1, 40), min_size=2))
def test_imbalance_warns_exactly_beyond_three_to_one_naming_largest_and_smallest(sizes):
    """The warning appears iff the largest class has more than 3x the smallest's images (3x
    exactly is fine), names a largest and a smallest class with their counts, and says
    what to read instead of accuracy."""
    plan, hashes = _plan(sizes)
    warnings = content_checks(hashes, plan, "src")
    if max(sizes.values()) <= 3 * min(sizes.values()):
        assert warnings == []
        return
    (warning,) = warnings
    found = re.fullmatch(
        r"class imbalance: (\w) has (\d+) images, (\w) (\d+) \(more than 3x\); accuracy can "
        r"hide a poorly recognised small class, so read the per-class recall",
        warning,
    )
    assert found, warning
    large, n_large, small, n_small = found.groups()
    assert (sizes[large], sizes[small]) == (int(n_large), int(n_small))
    assert (int(n_large), int(n_small)) == (max(sizes.values()), min(sizes.values()))


def test_copies_inside_a_class_name_the_class_and_every_copy():
    """Copies within one class are a warning naming the class and every copy, also when
    all of them are in test; one in test and one in training data is an error."""
    plan = {
        "a": {"train": ["1.png", "2.png", "3.png"], "val": ["4.png"], "test": ["5.png"]},
        "b": {"train": ["1.png", "2.png", "3.png"], "val": ["4.png"], "test": ["5.png"]},
    }
    hashes = {(label, f): f"{label}{f}" for label in plan for p in plan[label].values() for f in p}
    hashes["b", "1.png"] = hashes["b", "3.png"] = hashes["b", "4.png"] = "same"
    assert content_checks(hashes, plan, "gs://bkt/data") == [
        "duplicate images (same content) in class b: "
        "gs://bkt/data/b/1.png, gs://bkt/data/b/3.png, gs://bkt/data/b/4.png"
    ]
    only_test = {**hashes, ("a", "5.png"): "twin", ("b", "5.png"): "other"}
    only_test["a", "6.png"] = "twin"  # a second copy, in test too: no leak, a warning
    plan_test = {**plan, "a": {**plan["a"], "test": ["5.png", "6.png"]}}
    assert content_checks(only_test, plan_test, "src") == [
        "duplicate images (same content) in class a: src/a/5.png, src/a/6.png",
        "duplicate images (same content) in class b: src/b/1.png, src/b/3.png, src/b/4.png",
    ]
    hashes["b", "5.png"] = "same"  # now one copy is in test
    with pytest.raises(DataError) as error:
        content_checks(hashes, plan, "gs://bkt/data")
    assert str(error.value) == (
        "the same image would be in both training and test data: gs://bkt/data/b/1.png, "
        "gs://bkt/data/b/3.png, gs://bkt/data/b/4.png, gs://bkt/data/b/5.png; remove the copies"
    )


# What the step writes -----------------------------------------------------------------------


def test_split_facts_are_what_it_wrote_and_a_rerun_writes_the_same_bytes(tmp_path):
    """The facts (returned, in split.json and in the pipeline's metadata) describe the
    files written: the source as given, the classes, per-split counts of the manifest, the
    manifest's own sha256, the shard count of shards.json, the shard size asked for. A rerun
    with the same seed, into a folder that exists already (as KFP's output may) or whose
    parents do not, writes the same bytes, shards included."""
    src = data(tmp_path / "src", {"a": 6, "b": 5, "c": 4})
    (tmp_path / "first").mkdir()
    first = split_dataset(str(src), str(tmp_path / "first"), shard_mb=0.0002, **SPLIT)
    again = split_dataset(str(src), str(tmp_path / "x" / "y" / "again"), shard_mb=0.0002, **SPLIT)
    assert first == again == json.loads((tmp_path / "first" / FACTS).read_text())
    assert tree_bytes(tmp_path / "first") == tree_bytes(tmp_path / "x" / "y" / "again")
    examples = read_manifest(tmp_path / "first")
    index = shards.read_index(tmp_path / "first")
    manifest = (tmp_path / "first" / "manifest.csv").read_bytes()
    assert first == {
        "source": str(src),
        "classes": ["a", "b", "c"],
        "counts": {
            s: {c: sum(e.label == c and e.split == s for e in examples) for c in "abc"}
            for s in ("train", "val", "test")
        },
        "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "shards": len(index["shards"]),
        "shard_mb": 0.0002,
        "warnings": [],
    }
    assert first["counts"]["test"] == {"a": 2, "b": 2, "c": 1} and first["shards"] > 3
    for e in examples:
        assert (
            e.sha256 == hashlib.sha256((src / e.label / Path(e.path).name).read_bytes()).hexdigest()
        )


@pytest.mark.parametrize("where", ["", "b/"], ids=["beside-classes", "in-a-class"])
def test_errors_about_a_gs_data_folder_name_its_gs_path_not_the_download(tmp_path, bucket, where):
    """A ``gs://`` data folder is read from a temporary download; an error must name the
    folder as the user knows it (``gs://bucket/data`` or its class folder), which they can
    open and fix, never the temporary copy."""
    src = data(tmp_path / "src", {"a": 4, "b": 4})
    upload_folder(bucket, src, "data")
    bucket.blob(f"data/{where}bell\x07.png").upload_from_string(b"x")
    uri = f"gs://{bucket.name}/data"
    with pytest.raises(DataError) as error:
        scan(uri, **SPLIT)
    folder = f"{uri}/{where.rstrip('/')}" if where else uri
    assert str(error.value).startswith(f"{folder}: holds 'bell\\x07.png', a name that")


def test_an_unreadable_image_in_a_gs_data_folder_is_named_by_its_gs_uri(tmp_path, bucket):
    src = data(tmp_path / "src", {"a": 4, "b": 4})
    (src / "b" / "broken.png").write_text("not an image")
    upload_folder(bucket, src, "data")
    uri = f"gs://{bucket.name}/data"
    with pytest.raises(DataError) as error:
        scan(uri, **SPLIT)
    assert str(error.value).startswith(f"{uri}/b/broken.png: not a readable image")
