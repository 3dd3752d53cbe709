"""components.storage's promises, pinned so that mutmut's generated mutants of it fail:
URIs taken apart and joined, what counts as text, which paths are taken, downloads,
checksums, publishing (locally and on GCS, where every write carries its precondition),
compare-and-swap, stale staging and folder listings, and the one line naming the URI that
each of them reports when the storage service refuses.

The storage service is gcp-storage-emulator (``bucket``) or fake-gcs-server
(``strict_bucket``, which enforces generation preconditions); ``Service`` stands between
the client and the emulator where a test needs the service to refuse a request, to answer
what a real GCS answers for a composite object, or to see which requests were sent.
"""

import base64
import hashlib
import http.client
import json
import math
import os
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlparse

import google_crc32c
import pytest
from helpers import tree_bytes
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from components import storage

HOUR = 3600  # remove_stale_staging's default age


# ------------------------------------------------------------------ the service, in between


class Service(ThreadingHTTPServer):
    """Forwards every request to the emulator and records it; a request matching one of
    ``rules`` (method, regex on the unquoted path and query, action) gets the action
    instead: an HTTP status, ``"not json"`` (a 200 whose body is no JSON), or a function
    rewriting the emulator's JSON answer."""

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urlparse(upstream)
        self.rules: list[tuple[str, str, object]] = []
        self.seen: list[tuple[str, str, bytes]] = []  # method, unquoted path, body
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def writes(self) -> list[tuple[str, str, bytes]]:
        return [r for r in self.seen if r[0] in ("POST", "PUT", "PATCH", "DELETE")]


class _Forward(BaseHTTPRequestHandler):
    server: Service
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = unquote(self.path)
        with self.server.lock:
            self.server.seen.append((self.command, path, body))
        action = next(
            (a for m, p, a in self.server.rules if m == self.command and re.search(p, path)),
            None,
        )
        if isinstance(action, int):
            error = {"error": {"code": action, "message": f"refused with {action}"}}
            return self._answer(action, json.dumps(error).encode())
        if action == "not json":
            return self._answer(200, b"<html>not json</html>")
        upstream = http.client.HTTPConnection(
            self.server.upstream.hostname, self.server.upstream.port, timeout=30
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        if callable(action):
            data = json.dumps(action(json.loads(data))).encode()
        self._answer(answer.status, data, answer.getheader("Content-Type", "application/json"))

    def _answer(self, code: int, data: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def service(gcs_emulator, monkeypatch):
    """``components.storage`` talks to gcp-storage-emulator through a ``Service``."""
    server = Service(os.environ["STORAGE_EMULATOR_HOST"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    storage._client.cache_clear()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        storage._client.cache_clear()


def objects(bucket) -> dict[str, bytes]:
    return {b.name: b.download_as_bytes() for b in bucket.list_blobs()}


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
    with pytest.raises(storage.StorageError, match=f"^{uri}: cannot reach bucket '{bucket.name}'"):
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
@pytest.mark.parametrize("code, says", [(403, "permission denied"), (400, "service failed")])
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


def test_split_gcs_keeps_a_prefixs_own_letters_next_to_its_slashes():
    """Only slashes are trimmed from the prefix, whatever letters it starts or ends with."""
    assert storage.split_gcs("gs://bucket/Xdata/setX/") == ("bucket", "Xdata/setX")
