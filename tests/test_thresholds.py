"""Every time, size and count limit of the product, tried just below and just above its
value (and at it, where the limit says which side its value is on), so a >= for a >, an
off-by-one or a unit slip moves a verdict and fails here."""

import base64
import io
import os
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from shapes_pipeline.helpers import archive, dataset, registry, report, serving, shards, storage
from shapes_pipeline.helpers.dataset import DataError, Example
from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.runners import local_run
from shapes_pipeline.steps.evaluate import ConsistencyError, check_serving, stratified_sample

HOUR = 3600  # storage.remove_stale_staging's default age


# ----------------------------------------------------------- stale staging (3600 s)


def staging_folders(root: Path, ages: dict[str, float]) -> dict[str, Path]:
    made = {}
    for name, age in ages.items():
        (root / name / "saved_model").mkdir(parents=True)
        os.utime(root / name, (time.time() - age, time.time() - age))
        made[name] = root / name
    return made


def test_local_staging_is_removed_only_once_an_hour_old(tmp_path):
    """3599 s old may be a publish still running: kept; 3601 s: removed."""
    made = staging_folders(tmp_path, {".v-young.abcd1234": HOUR - 1, ".v-old.abcd1234": HOUR + 1})
    removed = storage.remove_stale_staging(str(tmp_path))
    assert removed == [str(made[".v-old.abcd1234"])]
    assert made[".v-young.abcd1234"].exists() and not made[".v-old.abcd1234"].exists()


def test_only_names_of_publish_staging_are_removed(tmp_path):
    """publish_tree stages in ``.<name>.<8 characters of mkdtemp>``: 7 or 9 are someone
    else's hidden folders, kept however old; a real mkdtemp name is removed."""
    staged = Path(storage.tempfile.mkdtemp(dir=tmp_path, prefix=".v."))
    os.utime(staged, (time.time() - 2 * HOUR, time.time() - 2 * HOUR))
    made = staging_folders(tmp_path, {".v.abcd123": 2 * HOUR, ".v.abcd12345": 2 * HOUR})
    assert storage.remove_stale_staging(str(tmp_path)) == [str(staged)]
    assert all(p.exists() for p in made.values())


def test_gcs_staging_is_removed_only_once_an_hour_old(bucket, monkeypatch):
    """The same hour on GCS, by the object's creation time: 3599 s kept, 3601 s removed."""
    blob = bucket.blob("registry/m/.staging/v-1/saved_model.pb")
    blob.upload_from_string(b"x")
    blob.reload()
    created = blob.time_created.timestamp()
    folder = f"gs://{bucket.name}/registry/m"
    monkeypatch.setattr(storage, "time", SimpleNamespace(time=lambda: created + HOUR - 1))
    assert storage.remove_stale_staging(folder) == []
    monkeypatch.setattr(storage, "time", SimpleNamespace(time=lambda: created + HOUR + 1))
    assert storage.remove_stale_staging(folder) == [f"gs://{bucket.name}/{blob.name}"]
    assert not list(bucket.list_blobs(prefix="registry/m/.staging/"))


# ---------------------------------------------------------------- names (characters)


def test_bucket_names_of_3_to_222_characters():
    for length, valid in ((2, False), (3, True), (222, True), (223, False)):
        uri = f"gs://{'a' * length}/x"
        if valid:
            assert storage.split_gcs(uri) == ("a" * length, "x")
        else:
            with pytest.raises(storage.StorageError, match="not a valid bucket name"):
                storage.split_gcs(uri)


def test_model_and_version_names_of_at_most_100_characters(tmp_path):
    assert registry.path(str(tmp_path), "m", "v" * 100).endswith("v" * 100)
    with pytest.raises(InputError, match="at most 100"):
        registry.path(str(tmp_path), "m", "v" * 101)
    with pytest.raises(InputError, match="at most 100"):
        registry.path(str(tmp_path), "m" * 101)


# ------------------------------------------------------------------ archive Limits


def one_entry(name: str = "data/a.png", content: bytes = b"png") -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, content)
    return zipfile.ZipFile(buffer)


def lying(*sizes: tuple[int, int]) -> zipfile.ZipFile:
    """An archive whose headers claim these (inflated, compressed) sizes: what check_entries
    reads before anything is inflated (a header can say anything)."""
    found = one_entry()
    template = found.infolist()[0]
    found.filelist = []
    for i, (inflated, compressed) in enumerate(sizes):
        info = zipfile.ZipInfo(f"data/{i}.png")
        info.compress_type = template.compress_type
        info.file_size, info.compress_size = inflated, compressed
        found.filelist.append(info)
    return found


LIMITS = archive.Limits()
MIB = LIMITS.ratio_from_bytes
PACKED = -(-LIMITS.total_bytes // LIMITS.ratio)  # total_bytes at no more than 100x


@pytest.mark.parametrize(
    "sizes, refused",
    [
        # one entry at exactly ratio x its compressed size, above ratio_from_bytes; one byte more
        ([(LIMITS.ratio * MIB, MIB)], None),
        ([(LIMITS.ratio * MIB + 1, MIB)], "more than 100x\\): a zip bomb"),
        # any ratio up to ratio_from_bytes inflated; one byte more
        ([(MIB, 1)], None),
        ([(MIB + 1, 1)], "more than 100x\\): a zip bomb"),
        # all entries together at exactly total_bytes; one byte more
        ([(LIMITS.total_bytes, PACKED)], None),
        ([(LIMITS.total_bytes, PACKED), (1, 1)], "inflates to more than 4294967296 bytes"),
        # the archive as a whole: each entry below ratio_from_bytes, together 100x exactly
        ([(600_000, 6_000), (600_000, 6_000)], None),
        ([(600_000, 6_000), (600_001, 6_000)], "more than 100x as a whole"),
        ([(MIB // 2, 1), (MIB // 2, 1)], None),
        ([(MIB // 2, 1), (MIB // 2 + 1, 1)], "more than 100x as a whole"),
    ],
    ids=[
        "entry-ratio-at", "entry-ratio-over", "small-entry-at", "small-entry-over",
        "total-at", "total-over", "whole-ratio-at", "whole-ratio-over", "whole-small-at",
        "whole-small-over",
    ],
)  # fmt: skip
def test_archive_size_limits_at_their_values(sizes, refused):
    """Each of Limits' sizes (defaults: 100x, 1 MiB, 4 GiB): at the value accepted, one
    byte over refused, before anything is inflated."""
    found = lying(*sizes)
    if refused is None:
        assert len(archive.check_entries(found, "data.zip")) == len(sizes)
    else:
        with pytest.raises(DataError, match=refused):
            archive.check_entries(found, "data.zip")


@pytest.mark.slow  # 100,000 entries checked: about 5 s
def test_archive_of_at_most_100000_entries():
    found = lying(*[(0, 0)] * LIMITS.entries)
    assert len(archive.check_entries(found, "data.zip")) == LIMITS.entries
    found.filelist.append(zipfile.ZipInfo("data/one-more.png"))
    with pytest.raises(DataError, match="100001 entries, more than 100000"):
        archive.check_entries(found, "data.zip")


@pytest.mark.parametrize("part", ["a" * 255, "é" * 127 + "a"])  # 255 bytes, in UTF-8
def test_entry_names_of_at_most_255_bytes(part):
    """255 bytes of a name are accepted, 256 refused: bytes, not characters (é is two)."""
    assert archive.check_entries(one_entry(f"data/{part}"), "data.zip")
    with pytest.raises(DataError, match="longer than 255 bytes"):
        archive.check_entries(one_entry(f"data/{part}a"), "data.zip")


# -------------------------------------------------------------------- image pixels


def test_an_image_of_exactly_max_pixels_is_accepted_and_one_more_refused(tmp_path):
    """40,000,000 pixels (8000x5000) decode; 40,000,001 (53x754717) are refused by size."""
    assert dataset.MAX_PIXELS + 1 == 53 * 754_717 and dataset.MAX_PIXELS == 8000 * 5000
    Image.new("1", (8000, 5000)).save(tmp_path / "at.png")
    Image.new("1", (53, 754_717)).save(tmp_path / "over.png")
    dataset.check_image(tmp_path / "at.png")
    with pytest.raises(DataError, match="53x754717 pixels, more than max_image_pixels 40000000"):
        dataset.check_image(tmp_path / "over.png")


@given(width=st.integers(1, 40), height=st.integers(1, 40))
def test_max_pixels_is_width_times_height(tmp_path_factory, width, height):
    """A given max_pixels: an image of exactly that many pixels passes, one fewer refuses."""
    path = tmp_path_factory.mktemp("px") / "i.png"
    Image.new("RGB", (width, height)).save(path)
    dataset.check_image(path, max_pixels=width * height)
    with pytest.raises(DataError, match=f"{width}x{height} pixels, more than"):
        dataset.check_image(path, max_pixels=width * height - 1)


# ------------------------------------------------------------------------- shard_mb


@given(
    parts=st.lists(st.tuples(st.integers(0, 4), st.sampled_from([-1, 0, 0, 1])), max_size=30),
    seed=st.integers(0, 3),
)
def test_a_shard_is_cut_where_it_reaches_shard_mb(parts, seed):
    """With the default 100 MB: every shard but a split's last holds at least 100 MB and
    was below it before its last image; the last was below before its last image too. Sizes
    of quarters of the limit, a byte either side, hit the edge exactly."""
    limit = shards.DEFAULT_SHARD_MB * 1_000_000
    sizes = [max(0, q * 25_000_000 + d) for q, d in parts]
    examples = [Example(f"{i}.png", "a", "train", "") for i in range(len(sizes))]
    planned = shards.plan(examples, sizes, shards.DEFAULT_SHARD_MB, seed)
    assert sorted(r for _, rows in planned for r in rows) == list(range(len(sizes)))
    for n, (_, rows) in enumerate(planned):
        total = sum(sizes[r] for r in rows)
        assert rows and total - sizes[rows[-1]] < limit
        if n < len(planned) - 1:
            assert total >= limit


# ----------------------------------------------------- gate_sample and serving_sample


@given(
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    seed=st.integers(0, 5),
)
def test_a_sample_of_the_whole_split_or_more_is_the_split(counts, seed):
    """most = n: every image (not sampled, so the gate says "these test images"); n - 1: a
    proper stratified sample, each class in it, no image twice."""
    labels = np.repeat(np.arange(len(counts)), counts)
    n = len(labels)
    np.testing.assert_array_equal(stratified_sample(labels, n, seed), np.arange(n))
    if n - 1 < len(counts):
        return  # fewer places than classes: not a size the gate's range allows in practice
    fewer = stratified_sample(labels, n - 1, seed)
    assert len(fewer) <= n - 1 and len(set(fewer.tolist())) == len(fewer)
    assert set(labels[fewer].tolist()) == set(range(len(counts)))


# -------------------------------------------------------------- the report's gallery


def examples(wrong: int, right: int) -> list[report.Example]:
    return [report.Example(f"w{i}.png", "a", "b", 0.5) for i in range(wrong)] + [
        report.Example(f"r{i}.png", "a", "a", 0.9) for i in range(right)
    ]


def test_the_gallery_shows_up_to_200_mistakes_and_12_correct_images():
    wrong, right = report.shown(examples(report.MAX_WRONG, report.CORRECT_SAMPLE))
    assert len(wrong) == 200 and len({e.path for e in wrong}) == 200
    assert len(right) == 12 and len({e.path for e in right}) == 12
    wrong, right = report.shown(examples(report.MAX_WRONG + 1, report.CORRECT_SAMPLE + 1))
    assert len(wrong) == 200 and len({e.path for e in wrong}) == 200
    assert (wrong[0].path, wrong[-1].path) == ("w0.png", "w200.png")
    assert len(right) == 12 and (right[0].path, right[-1].path) == ("r0.png", "r12.png")


@pytest.mark.parametrize(
    "size, shown", [((96, 40), (96, 40)), ((97, 40), (96, 40)), ((40, 97), (40, 96))]
)
def test_thumbnails_are_at_most_96_pixels(size, shown):
    encoded = io.BytesIO()
    Image.new("RGB", size).save(encoded, format="PNG")
    uri = report.thumbnail(encoded.getvalue())
    png = base64.b64decode(uri.removeprefix("data:image/png;base64,"))
    assert Image.open(io.BytesIO(png)).size == shown


# ------------------------------------------------------- the progress line (5 s)


def test_progress_off_a_terminal_is_a_line_every_5_seconds(monkeypatch):
    """Not a terminal: the first progress line shows, the next only 5 s later."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(local_run, "time", SimpleNamespace(monotonic=lambda: clock.now))
    out = io.StringIO()
    console = local_run.Console(out)
    console.progress("epoch 1")
    clock.now += 5 - 1e-3
    console.progress("epoch 2")
    clock.now += 2e-3
    console.progress("epoch 3")
    assert out.getvalue().splitlines() == ["epoch 1", "epoch 3"]


# ------------------------------------------------------ serving's tolerance (1e-4)


@pytest.mark.slow  # reads the data set's shards with TensorFlow
@pytest.mark.parametrize("off", [1e-4, np.nextafter(1e-4, 1)])  # the documented 1e-4
def test_serving_may_differ_from_the_evaluation_by_1e_4_and_no_more(split_dir, off):
    """check_serving: serving_default's probabilities exactly 1e-4 from the evaluation's
    pass; the next float above is refused, naming the image."""
    manifest = dataset.read_manifest(split_dir)
    rows = [i for i, e in enumerate(manifest) if e.split == "test"]
    paths = [manifest[i].path for i in rows]
    evaluated = np.tile([0.0, 0.0, 0.9], (len(rows), 1))
    served = serving.Served(
        classes=["a", "b", "c"],
        predict=lambda images: np.tile([0.0, off, 0.9], (len(images), 1)),
        predict_features=None,
    )
    sample = np.arange(len(rows))
    if off == 1e-4:
        checked = check_serving(served, str(split_dir), paths, rows, evaluated, sample)
        assert checked == {"images": len(rows), "max_difference": off, "tolerance": 1e-4}
    else:
        with pytest.raises(ConsistencyError, match=r"test/\w+/.*: serving_default gives"):
            check_serving(served, str(split_dir), paths, rows, evaluated, sample)
