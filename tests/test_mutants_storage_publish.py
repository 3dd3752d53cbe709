"""shapes_pipeline.helpers.storage's publishing promises, pinned so that mutmut's generated
mutants of it fail: publishing a folder locally and on GCS (where every write carries its
precondition), compare-and-swap of a small text file, stale staging and folder listings.
The rest of the module is pinned in test_mutants_storage.py.

The storage service is gcp-storage-emulator (``bucket``) or fake-gcs-server
(``strict_bucket``, which enforces generation preconditions); a ``GcsProxy`` (``service``)
stands between the client and the emulator where a test needs the service to refuse a
request or to see which requests were sent.
"""

import math
import os
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from gcs_proxy import objects, proxied
from helpers import tree_bytes
from hypothesis import given
from hypothesis import strategies as st

from shapes_pipeline.helpers import storage

HOUR = 3600  # remove_stale_staging's default age


@pytest.fixture
def service(gcs_emulator, monkeypatch):
    """``shapes_pipeline.helpers.storage`` talks to gcp-storage-emulator through a ``GcsProxy``."""
    yield from proxied(monkeypatch)


# ------------------------------------------------------------ publishing, locally


def make_tree(root: Path) -> Path:
    (root / "saved_model" / "variables").mkdir(parents=True)
    (root / "saved_model" / "saved_model.pb").write_bytes(b"\x08\x01graph")
    (root / "saved_model" / "variables" / "v.data").write_bytes(b"\x00" * 33)
    (root / "metadata.json").write_text('{"version": "v1"}')
    return root


def test_a_folder_without_its_marker_is_not_published(tmp_path, bucket):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.keras").write_bytes(b"m")
    for uri in (str(tmp_path / "reg" / "v1"), f"gs://{bucket.name}/reg/v1"):
        with pytest.raises(storage.StorageError, match=f"^{src}: no metadata.json to publish"):
            storage.publish_tree(str(src), uri, marker="metadata.json")
    assert not (tmp_path / "reg").exists() and objects(bucket) == {}


def test_local_publish_makes_an_exact_copy_readable_by_all(tmp_path):
    """Into folders that do not exist yet, then beside an existing one, whatever the umask
    and the modes of the files written (here private, as under umask 077, which copying
    keeps); nothing hidden is left beside them."""
    src = make_tree(tmp_path / "src")
    for path in src.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    previous = os.umask(0o077)
    try:
        for version in ("v1", "v2"):
            storage.publish_tree(str(src), str(tmp_path / "a" / "b" / version), "metadata.json")
    finally:
        os.umask(previous)
    for version in ("v1", "v2"):
        target = tmp_path / "a" / "b" / version
        assert tree_bytes(target) == tree_bytes(src)
        for path in [target, *target.rglob("*")]:
            assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["v1", "v2"]


def test_local_publish_stages_beside_the_target_where_stale_staging_is_found(tmp_path, monkeypatch):
    """The staging folder is a hidden sibling of the target (so the rename cannot cross
    file systems) whose name remove_stale_staging recognises once a crash left it."""
    seen = []
    readable = storage._readable_by_all

    def observe(folder):
        seen.append(folder)
        assert tree_bytes(folder) == tree_bytes(tmp_path / "src")
        readable(folder)

    monkeypatch.setattr(storage, "_readable_by_all", observe)
    make_tree(tmp_path / "src")
    storage.publish_tree(str(tmp_path / "src"), str(tmp_path / "reg" / "v1"), "metadata.json")
    (staging,) = seen
    assert staging.parent == tmp_path / "reg" and staging.name.startswith(".v1.")
    staging.mkdir()  # as a killed publish leaves it
    os.utime(staging, (1, 1))
    assert storage.remove_stale_staging(str(tmp_path / "reg")) == [str(staging)]


def test_a_writer_landing_before_the_rename_keeps_its_folder(tmp_path, monkeypatch):
    readable = storage._readable_by_all
    target = tmp_path / "reg" / "v1"

    def another_writer_lands(folder):
        readable(folder)
        target.mkdir()
        (target / "theirs").write_text("theirs")

    monkeypatch.setattr(storage, "_readable_by_all", another_writer_lands)
    make_tree(tmp_path / "src")
    with pytest.raises(storage.StorageConflict, match=f"^{target}: already exists, not overwr"):
        storage.publish_tree(str(tmp_path / "src"), str(target), "metadata.json")
    assert tree_bytes(tmp_path / "reg") == {"v1": None, "v1/theirs": b"theirs"}


def test_a_file_that_cannot_be_copied_is_an_error_not_a_conflict(tmp_path):
    """A named pipe cannot be copied: the publish fails naming it, leaving nothing."""
    src = make_tree(tmp_path / "src")
    os.mkfifo(src / "saved_model" / "pipe")
    target = tmp_path / "reg" / "v1"
    with pytest.raises(storage.StorageError) as failed:
        storage.publish_tree(str(src), str(target), "metadata.json")
    assert not isinstance(failed.value, storage.StorageConflict)
    assert str(failed.value).startswith(
        f"{target}: not published, copying {src / 'saved_model' / 'pipe'} failed: "
    )
    assert list((tmp_path / "reg").iterdir()) == []


# -------------------------------------------------------------- publishing, on GCS


@pytest.mark.parametrize("folder, parent", [("reg/m/v1", "reg/m/"), ("v1", "")])
def test_gcs_publish_stages_copies_then_writes_the_marker_all_preconditioned(
    service, bucket, tmp_path, folder, parent
):
    """Every file goes to <parent>/.staging/<name>-<12 hex>/ (at a bucket's top: to
    .staging/<name>-<12 hex>/), is copied into place, the marker is written last; every
    write carries ifGenerationMatch=0; the staged objects are deleted."""
    src = make_tree(tmp_path / "src")
    storage.publish_tree(str(src), f"gs://{bucket.name}/{folder}", marker="metadata.json")
    payload = ["saved_model/saved_model.pb", "saved_model/variables/v.data"]
    assert objects(bucket) == {
        f"{folder}/{rel}": data for rel, data in tree_bytes(src).items() if data is not None
    }
    writes = service.writes()
    uploads = [w for w in writes if w[0] == "POST" and w[1].startswith("/upload/")]
    copies = [w for w in writes if "/copyTo/" in w[1]]
    deletes = [w for w in writes if w[0] == "DELETE"]
    assert len(writes) == len(uploads) + len(copies) + len(deletes)
    assert all("ifGenerationMatch=0" in w[1] for w in uploads + copies)
    names = [re.search(rb'"name": ?"([^"]+)"', w[2]).group(1).decode() for w in uploads]
    staging = re.fullmatch(rf"({parent}\.staging/v1-[0-9a-f]{{12}})/.+", names[0]).group(1)
    assert names == [f"{staging}/{rel}" for rel in payload] + [f"{folder}/metadata.json"]
    assert [w[1].split("?")[0] for w in copies] == [
        f"/storage/v1/b/{bucket.name}/o/{staging}/{rel}/copyTo/b/{bucket.name}/o/{folder}/{rel}"
        for rel in payload
    ]
    assert writes.index(uploads[-1]) == len(uploads) - 1 + len(copies)  # marker last
    assert sorted(w[1].split("?")[0].rsplit("/o/", 1)[1] for w in deletes) == [
        f"{staging}/{rel}" for rel in payload
    ]


def test_gcs_publish_loses_to_a_writer_landing_after_its_check(
    strict_bucket, tmp_path, monkeypatch
):
    """The other writer's marker stays; ours is refused by the precondition, as a conflict."""
    taken = storage._taken

    def another_writer_lands(uri):
        answer = taken(uri)
        strict_bucket.blob("reg/v1/metadata.json").upload_from_string(b"theirs")
        return answer

    monkeypatch.setattr(storage, "_taken", another_writer_lands)
    src = make_tree(tmp_path / "src")
    uri = f"gs://{strict_bucket.name}/reg/v1"
    with pytest.raises(storage.StorageConflict, match=f"^{uri}: already exists, not overwritten$"):
        storage.publish_tree(str(src), uri, marker="metadata.json")
    assert strict_bucket.blob("reg/v1/metadata.json").download_as_bytes() == b"theirs"
    assert not [b.name for b in strict_bucket.list_blobs() if "/.staging/" in b.name]


@pytest.mark.parametrize(
    "fault",
    [("DELETE", "/\\.staging/", 403), ("GET", "prefix=reg/\\.staging/", "not json")],
    ids=["delete refused", "listing garbled"],
)
def test_gcs_publish_succeeds_when_removing_its_staging_fails(service, bucket, tmp_path, fault):
    """Leftover staging is hidden and removed later; the version is published."""
    service.rules.append(fault)
    src = make_tree(tmp_path / "src")
    storage.publish_tree(str(src), f"gs://{bucket.name}/reg/v1", marker="metadata.json")
    published = {n: d for n, d in objects(bucket).items() if "/.staging/" not in n}
    assert published == {
        f"reg/v1/{rel}": data for rel, data in tree_bytes(src).items() if data is not None
    }


# ----------------------------------------------------------------- stale staging


def test_local_staging_of_exactly_an_hour_is_stale_and_versions_never_are(tmp_path, monkeypatch):
    """At the default age exactly, a staging folder goes; a published version folder, a
    hidden file and younger staging stay however old."""
    now = 2_000_000_000
    staged = {".v1.abcd_123": now - HOUR, ".v2.abcd1234": now - HOUR + 1}
    for name, when in {**staged, "v0": 1}.items():
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (when, when))
    (tmp_path / ".v3.abcd1234").write_text("a file")
    os.utime(tmp_path / ".v3.abcd1234", (1, 1))
    monkeypatch.setattr(storage, "time", SimpleNamespace(time=lambda: now))
    assert storage.remove_stale_staging(str(tmp_path)) == [str(tmp_path / ".v1.abcd_123")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".v2.abcd1234", ".v3.abcd1234", "v0"]
    assert storage.remove_stale_staging(str(tmp_path / "missing")) == []


def test_staging_that_cannot_be_removed_does_not_fail_the_cleanup(tmp_path):
    """An immutable file (even root cannot delete it) inside one stale staging folder: the
    others are still removed and no error escapes."""
    for name in (".v1.aaaaaaaa", ".v2.bbbbbbbb"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
        os.utime(tmp_path / name, (1, 1))
    stuck = tmp_path / ".v1.aaaaaaaa" / "f"
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        removed = storage.remove_stale_staging(str(tmp_path))
        assert sorted(removed) == [str(tmp_path / ".v1.aaaaaaaa"), str(tmp_path / ".v2.bbbbbbbb")]
        assert sorted(p.name for p in tmp_path.iterdir()) == [".v1.aaaaaaaa"]
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)


def test_gcs_staging_of_exactly_an_hour_is_stale_and_versions_never_are(bucket, monkeypatch):
    """Objects outside the folder's .staging/ are never removed, however old."""
    young = bucket.blob("reg/m/.staging/v2-1/a")
    for name in ("reg/m/v0/metadata.json", "reg/.staging/x", "reg/m/.staging/v1-1/a"):
        bucket.blob(name).upload_from_string(b"x")
    stale = bucket.get_blob("reg/m/.staging/v1-1/a").time_created.timestamp()
    now = stale + HOUR
    while now - HOUR < stale:  # the cutoff exactly at its creation time
        now = math.nextafter(now, math.inf)
    time.sleep(0.01)
    young.upload_from_string(b"x")
    young.reload()
    assert young.time_created.timestamp() > stale
    monkeypatch.setattr(storage, "time", SimpleNamespace(time=lambda: now))
    folder = f"gs://{bucket.name}/reg/m"
    assert storage.remove_stale_staging(folder) == [f"gs://{bucket.name}/reg/m/.staging/v1-1/a"]
    assert sorted(objects(bucket)) == [
        "reg/.staging/x",
        "reg/m/.staging/v2-1/a",
        "reg/m/v0/metadata.json",
    ]


# -------------------------------------------------------------- compare-and-swap


def test_local_replace_text_swaps_only_what_it_expects(tmp_path):
    path = tmp_path / "new" / "deep" / "LATEST"
    uri = str(path)
    storage.replace_text(uri, "v1\n", expected=None)
    storage.replace_text(uri, "v2\n", expected="v1\n")
    assert storage.read_text(uri) == "v2\n"
    for expected, says in ((None, "expected no file"), ("v1\n", "expected 'v1\\n'")):
        with pytest.raises(storage.StorageConflict) as refused:
            storage.replace_text(uri, "v3\n", expected=expected)
        assert str(refused.value) == f"{uri}: holds 'v2\\n', {says}; not replaced"
    other = str(tmp_path / "new" / "OTHER")
    with pytest.raises(storage.StorageConflict) as refused:
        storage.replace_text(other, "x", expected="v2\n")
    assert str(refused.value) == f"{other}: holds no file, expected 'v2\\n'; not replaced"
    assert storage.read_text(uri) == "v2\n" and storage.read_text(other) is None
    assert sorted(p.name for p in path.parent.iterdir()) == [".LATEST.lock", "LATEST"]


def test_gcs_replace_text_swaps_only_what_it_expects(strict_bucket):
    uri = f"gs://{strict_bucket.name}/reg/LATEST"
    storage.replace_text(uri, "v1\n", expected=None)
    storage.replace_text(uri, "v2\n", expected="v1\n")
    strict_bucket.blob("reg/DAMAGED").upload_from_string(b"\xff\x00")
    damaged = f"gs://{strict_bucket.name}/reg/DAMAGED"
    storage.replace_text(damaged, "v1\n", expected=storage.read_text(damaged))
    assert storage.read_text(damaged) == "v1\n"
    generation = strict_bucket.get_blob("reg/LATEST").generation
    for expected, says in ((None, "expected no file"), ("v1\n", "expected 'v1\\n'")):
        with pytest.raises(storage.StorageConflict) as refused:
            storage.replace_text(uri, "v3\n", expected=expected)
        assert str(refused.value) == f"{uri}: holds 'v2\\n', {says}; not replaced"
    assert strict_bucket.get_blob("reg/LATEST").generation == generation
    assert storage.read_text(uri) == "v2\n"


@pytest.mark.parametrize("before", [None, "v1\n"])
def test_gcs_replace_text_loses_to_a_writer_landing_after_its_check(
    strict_bucket, monkeypatch, before
):
    """Whether or not the object existed, the write is conditional on what was read."""
    uri = f"gs://{strict_bucket.name}/reg/LATEST"
    if before is not None:
        strict_bucket.blob("reg/LATEST").upload_from_string(before)
    check = storage._check_current

    def another_writer_lands(*args):
        check(*args)
        strict_bucket.blob("reg/LATEST").upload_from_string("theirs\n")

    monkeypatch.setattr(storage, "_check_current", another_writer_lands)
    with pytest.raises(storage.StorageConflict) as refused:
        storage.replace_text(uri, "ours\n", expected=before)
    assert str(refused.value) == f"{uri}: changed by another writer meanwhile; not replaced"
    assert strict_bucket.blob("reg/LATEST").download_as_bytes() == b"theirs\n"


# --------------------------------------------------------------------- listings


def test_list_folders_on_gcs_lists_direct_subfolders_only(bucket):
    for name in (
        "reg/m/v2/metadata.json",
        "reg/m/v1/saved_model/saved_model.pb",
        "reg/m/v1X/metadata.json",
        "reg/m/.staging/v3-0123456789ab/metadata.json",
        "reg/m/LATEST",
        "reg/mx/v9/metadata.json",
    ):
        bucket.blob(name).upload_from_string(b"x")
    assert storage.list_folders(f"gs://{bucket.name}/reg/m") == ["v1", "v1X", "v2"]
    assert storage.list_folders(f"gs://{bucket.name}/reg/m/") == ["v1", "v1X", "v2"]
    assert storage.list_folders(f"gs://{bucket.name}/reg") == ["m", "mx"]
    assert storage.list_folders(f"gs://{bucket.name}") == ["reg"]
    assert storage.list_folders(f"gs://{bucket.name}/none") == []


FOLDER = st.from_regex(r"[.a-z0-9][a-z0-9._-]{0,6}", fullmatch=True).filter(
    lambda n: n not in (".", "..")
)


@given(st.sets(FOLDER, max_size=8))
def test_list_folders_locally_is_the_sorted_visible_folders(names):
    """Folders only (a file of the same kind of name is not one), hidden ones left out."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            (Path(tmp) / name).mkdir()
            (Path(tmp) / name / "file").write_text("x")
        (Path(tmp) / "zz-a-file").write_text("x")
        assert storage.list_folders(tmp) == sorted(n for n in names if not n.startswith("."))
        assert storage.list_folders(str(Path(tmp) / "missing")) == []
