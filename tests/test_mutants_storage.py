"""shapes_pipeline.helpers.storage's promises, pinned so that mutmut's generated mutants of it fail:
URIs taken apart and joined, what counts as text, which paths are taken, downloads,
checksums, and the one line naming the URI that each operation reports when the storage
service refuses. Publishing, compare-and-swap, stale staging and listings are pinned in
test_mutants_storage_publish.py.

The storage service is gcp-storage-emulator (``bucket``); a ``GcsProxy`` (``service``)
stands between the client and the emulator where a test needs the service to refuse a
request or to answer what a real GCS answers for a composite object.
"""

import base64
import hashlib
from pathlib import Path

import google_crc32c
import pytest
from gcs_proxy import objects, proxied
from helpers import tree_bytes
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shapes_pipeline.helpers import storage


@pytest.fixture
def service(gcs_emulator, monkeypatch):
    """``shapes_pipeline.helpers.storage`` talks to gcp-storage-emulator through a ``GcsProxy``."""
    yield from proxied(monkeypatch)


# ------------------------------------------------------------------------- URIs

BUCKETS = st.from_regex(r"[a-z0-9][a-z0-9._-]{1,20}[a-z0-9]", fullmatch=True)
# Anything printable but '/', including spaces and non-ASCII; '.' and '..' are left out.
SEGMENT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\x7f"),
    min_size=1,
    max_size=8,
).filter(lambda s: s not in (".", ".."))


@given(BUCKETS, st.lists(SEGMENT, max_size=4), st.sampled_from(["", "/", "//"]))
@example("bkt", ["a b", "c"], "/")  # a space is not a control character
@example("bkt", [], "")
def test_split_gcs_takes_any_plain_uri_apart_into_bucket_and_prefix(bucket, segments, tail):
    """Bucket, then the segments joined by '/', without leading/trailing slashes; the
    same as join builds from the bucket and the segments."""
    prefix = "/".join(segments)
    uri = f"gs://{bucket}/{prefix}{tail}" if segments or tail else f"gs://{bucket}"
    assert storage.split_gcs(uri) == (bucket, prefix)
    assert storage.split_gcs(storage.join(f"gs://{bucket}", *segments)) == (bucket, prefix)
    assert storage.is_gcs(uri)


@pytest.mark.parametrize("bad", ["", ".", "..", "a\x00b", "\x1f", "x\x7f", "\n", "\t"])
@settings(max_examples=15)  # per bad segment
@given(BUCKETS, st.lists(SEGMENT, max_size=3), st.integers(0, 3))
def test_split_gcs_refuses_dot_and_empty_segments_and_control_characters(
    bad, bucket, segments, where
):
    """One such segment anywhere (not at the ends, which are trimmed) is refused with a
    message naming the URI and what is not allowed."""
    segments.insert(min(where, len(segments)), bad)
    uri = f"gs://{bucket}/" + "/".join(["head", *segments, "tail"])
    with pytest.raises(storage.StorageError) as refused:
        storage.split_gcs(uri)
    message = str(refused.value)
    assert message.startswith(repr(uri)) and "are not allowed in a gs:// URI" in message


def test_split_gcs_names_a_missing_or_invalid_bucket():
    for uri in ("gs://", "gs:///data"):
        with pytest.raises(storage.StorageError, match=f"^{uri}: no bucket name"):
            storage.split_gcs(uri)
    with pytest.raises(storage.StorageError, match="^gs://My_Bucket/x: 'My_Bucket' is not a valid"):
        storage.split_gcs("gs://My_Bucket/x")


def test_join_puts_exactly_one_slash_between_parts():
    assert storage.join("gs://b/a/", "/x/", "y/") == "gs://b/a/x/y"
    assert storage.join("gs://b", "x") == "gs://b/x"
    assert storage.join("gs://b/MAX/", "/XL/") == "gs://b/MAX/XL"  # only slashes are trimmed
    assert storage.join("/data/reg", "m", "v1") == "/data/reg/m/v1"
    assert storage.join("reg/", "m") == "reg/m"
    assert not storage.is_gcs("GS://b/x") and not storage.is_gcs("/gs://x")


def test_split_gcs_keeps_a_prefixs_own_letters_next_to_its_slashes():
    """Only slashes are trimmed from the prefix, whatever letters it starts or ends with."""
    assert storage.split_gcs("gs://bucket/Xdata/setX/") == ("bucket", "Xdata/setX")


# ------------------------------------------------------------------- text as read


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=12))
@example(b"a b\n\r\tc")
@example(b"\x01")
@example(b"\xff\xfeok")
@example("caf\u00e9 \U0001f600".encode())
def test_read_text_keeps_every_byte_and_is_text_tells_clean_utf8(tmp_path, raw):
    """Any bytes read back encode to themselves (surrogateescape), and is_text says
    whether they were UTF-8 without control bytes other than newline, return and tab."""
    path = tmp_path / "f"
    path.write_bytes(raw)
    text = storage.read_text(str(path))
    assert text.encode("utf-8", "surrogateescape") == raw
    try:
        raw.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    assert storage.is_text(text) == (utf8 and all(b >= 32 or b in b"\n\r\t" for b in raw))


def test_read_text_of_nothing_or_of_a_folder_is_none(tmp_path):
    assert storage.read_text(str(tmp_path / "missing")) is None
    assert storage.read_text(str(tmp_path)) is None


def test_read_text_on_gcs(bucket):
    bucket.blob("r/LATEST").upload_from_string(b"v1\n\xff")
    assert storage.read_text(f"gs://{bucket.name}/r/LATEST") == "v1\n\udcff"
    assert storage.read_text(f"gs://{bucket.name}/r/MISSING") is None


# ---------------------------------------------------------------- taken or not


def test_check_exists_locally_names_the_missing_path(tmp_path):
    (tmp_path / "file").write_text("x")
    storage.check_exists(str(tmp_path / "file"))
    storage.check_exists(str(tmp_path))
    missing = str(tmp_path / "missing")
    with pytest.raises(storage.StorageError, match=f"^{missing}: no such file or directory$"):
        storage.check_exists(missing)


def test_check_exists_on_gcs_finds_objects_and_prefixes_only(bucket):
    """An object, a prefix of whole segments, or a bucket holding anything; 'dat' is not
    a prefix of 'data/x' and an empty bucket holds nothing."""
    root = f"gs://{bucket.name}"
    with pytest.raises(storage.StorageError, match=f"^{root}: no such object or prefix$"):
        storage.check_exists(root)
    bucket.blob("data/x").upload_from_string(b"x")
    for there in (root, f"{root}/data", f"{root}/data/", f"{root}/data/x"):
        storage.check_exists(there)
    for missing in (f"{root}/dat", f"{root}/data/x/y", f"{root}/other"):
        with pytest.raises(storage.StorageError, match=f"^{missing}: no such object or prefix$"):
            storage.check_exists(missing)


def test_check_bucket_checks_only_gcs_buckets(gcs_emulator, bucket, tmp_path):
    storage.check_bucket(str(tmp_path / "not" / "yet"))  # created on write
    storage.check_bucket(f"gs://{bucket.name}/anything")
    with pytest.raises(storage.StorageError, match="^gs://no-such-bkt-1/m: bucket 'no-such-bkt-1'"):
        storage.check_bucket("gs://no-such-bkt-1/m")


def test_a_bucket_that_cannot_be_read_is_named(service, bucket):
    service.rules.append(("GET", f"/b/{bucket.name}\\?", 403))
    uri = f"gs://{bucket.name}/models"
    with pytest.raises(storage.StorageError, match=f"^{uri}: permission denied"):
        storage.check_bucket(uri)


# ---------------------------------------------------------------------- downloads


def test_download_tree_copies_exactly_the_files_under_the_prefix(bucket, tmp_path):
    """Relative paths kept; folder placeholders ('data/', 'data/sub/') and objects of a
    neighbouring prefix ('data2/') left out; the bucket's root takes everything."""
    for name, data in {
        "data/": b"",
        "data/a.txt": b"a",
        "data/sub/": b"",
        "data/sub/b.bin": b"\x00b",
        "data2/c": b"c",
    }.items():
        bucket.blob(name).upload_from_string(data)
    storage.download_tree(f"gs://{bucket.name}/data", str(tmp_path / "one"))
    assert tree_bytes(tmp_path / "one") == {"a.txt": b"a", "sub": None, "sub/b.bin": b"\x00b"}
    storage.download_tree(f"gs://{bucket.name}", str(tmp_path / "all"))
    assert tree_bytes(tmp_path / "all") == {
        "data": None,
        "data/a.txt": b"a",
        "data/sub": None,
        "data/sub/b.bin": b"\x00b",
        "data2": None,
        "data2/c": b"c",
    }


def test_download_tree_of_an_empty_prefix_is_an_error_naming_it(bucket, tmp_path):
    bucket.blob("data/").upload_from_string(b"")  # a folder placeholder only
    for uri in (f"gs://{bucket.name}/data", f"gs://{bucket.name}/none"):
        with pytest.raises(storage.StorageError, match=f"^{uri}: no objects under this prefix$"):
            storage.download_tree(uri, str(tmp_path / "down"))


def test_a_download_that_fails_names_the_object(bucket, tmp_path):
    """A folder where the file should go: the object that could not be written is named."""
    bucket.blob("data/a").upload_from_string(b"x")
    bucket.blob("data/b").upload_from_string(b"y")
    (tmp_path / "down" / "b").mkdir(parents=True)
    with pytest.raises(storage.StorageError) as failed:
        storage.download_tree(f"gs://{bucket.name}/data", str(tmp_path / "down"))
    assert str(failed.value).startswith(f"gs://{bucket.name}/data/b: download failed (")


def test_copy_to_local_downloads_only_gcs_objects(bucket, tmp_path):
    local = tmp_path / "model.keras"
    local.write_bytes(b"here")
    dest = str(tmp_path / "dest")
    assert storage.copy_to_local(str(local), dest) == str(local)
    assert not Path(dest).exists()
    bucket.blob("m/model.keras").upload_from_string(b"there")
    assert storage.copy_to_local(f"gs://{bucket.name}/m/model.keras", dest) == dest
    assert Path(dest).read_bytes() == b"there"
    missing = f"gs://{bucket.name}/m/none.keras"
    with pytest.raises(storage.StorageError, match=f"^{missing}: no such object$"):
        storage.copy_to_local(missing, str(tmp_path / "other"))


# ---------------------------------------------------------------------- checksums


def test_checksum_is_the_md5_of_the_content(bucket):
    data = b"weights" * 100
    bucket.blob("m/w.h5").upload_from_string(data)
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert storage.checksum(f"gs://{bucket.name}/m/w.h5") == f"md5:{md5}"
    missing = f"gs://{bucket.name}/m/none"
    with pytest.raises(storage.StorageError, match=f"^{missing}: no such object$"):
        storage.checksum(missing)


def test_checksum_of_a_composite_object_is_crc32c_and_size(service, bucket):
    """GCS keeps no MD5 of a composite object; the service here answers as GCS does."""
    data = b"part one, part two"
    bucket.blob("m/big").upload_from_string(data)
    no_md5 = lambda meta: {k: v for k, v in meta.items() if k != "md5Hash"}  # noqa: E731
    service.rules.append(("GET", "/o/m/big", no_md5))
    crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
    assert storage.checksum(f"gs://{bucket.name}/m/big") == f"crc32c:{crc}:{len(data)}"


# --------------------------------------------------------- refusals name the URI

# (operation on uri, the request refused): each call reaches the service inside
# storage's reporting, so its refusal must come back as one line starting with the URI.
REFUSED = {
    "check_exists": (lambda u, tmp: storage.check_exists(u), "GET", "/o/"),
    "download_tree": (lambda u, tmp: storage.download_tree(u, str(tmp / "d")), "GET", "/o\\?"),
    "download_file": (lambda u, tmp: storage.download_file(u, str(tmp / "f")), "GET", "/o/"),
    "checksum": (lambda u, tmp: storage.checksum(u), "GET", "/o/"),
    "read_text": (lambda u, tmp: storage.read_text(u), "GET", "/o/"),
    "replace_text": (lambda u, tmp: storage.replace_text(u, "new", "old"), "GET", "/o/"),
    "list_folders": (lambda u, tmp: storage.list_folders(u), "GET", "/o\\?"),
    "remove_stale_staging": (lambda u, tmp: storage.remove_stale_staging(u), "GET", "/o\\?"),
    "publish_tree": (
        lambda u, tmp: storage.publish_tree(str(tmp / "src"), u + "-new", "m"),
        "POST",
        "/o",
    ),
}


@pytest.mark.parametrize("operation", REFUSED)
@pytest.mark.parametrize("code, says", [(403, "permission denied"), (400, "service refused it")])
def test_a_refusal_of_the_service_is_one_line_naming_the_uri(
    service, bucket, tmp_path, operation, code, says
):
    call, method, path = REFUSED[operation]
    bucket.blob("data/x").upload_from_string(b"old")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m").write_text("marker")
    uri = f"gs://{bucket.name}/data" + ("/x" if path == "/o/" else "")
    service.rules.append((method, path, code))
    with pytest.raises(storage.StorageError) as refused:
        call(uri, tmp_path)
    message = str(refused.value)
    assert message.startswith(uri) and says in message and "\n" not in message
    assert f"refused with {code}" in message
    assert objects(bucket) == {"data/x": b"old"}
