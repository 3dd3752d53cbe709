"""Reads and writes local paths and ``gs://`` URIs, so every step takes either.

GCS goes through google-cloud-storage (``tf.io.gfile`` ignores ``STORAGE_EMULATOR_HOST``).
With that variable set, the client talks to the emulator anonymously, which is how tests
run against a real storage API without credentials.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as gauth
from google.cloud import storage
from google.cloud.storage import transfer_manager

from shapes_pipeline.helpers.step import InfrastructureError, InputError


class StorageError(InputError):
    """A path, bucket or object that cannot be used; the message names it."""


class StorageConflict(StorageError):
    """Another writer got there first; what it wrote stays, ours is not written."""


# What is left of an outage after the client's own retries: the service's 5xx and 429, or
# no answer at all. The user's input is not at fault, and a later run may succeed.
OUTAGES = (
    gexc.ServerError,
    gexc.TooManyRequests,
    gexc.RetryError,
    gauth.TransportError,
    requests.RequestException,
)
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
# Hidden prefix beside a gs:// folder being published, for its files on their way in.
STAGING = ".staging"
# Parallel object downloads: enough to hide per-object latency, few enough for one pod.
DOWNLOAD_THREADS = 16


def is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> (``bucket``, ``a/b``); the prefix has no leading/trailing slash.

    A URI whose path could mean something else than it says (``.`` or ``..`` segments,
    empty segments, control characters) is refused rather than passed on.
    """
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket name in the gs:// URI")
    if not BUCKET_NAME.fullmatch(bucket):
        raise StorageError(f"{uri}: {bucket!r} is not a valid bucket name")
    prefix = prefix.strip("/")
    segments = prefix.split("/") if prefix else []
    if any(s in ("", ".", "..") for s in segments) or any(
        ord(c) < 32 or c == "\x7f" for c in prefix
    ):
        raise StorageError(
            f"{uri!r}: '.', '..' and empty path segments and control characters are not "
            "allowed in a gs:// URI"
        )
    return bucket, prefix


def join(uri: str, *parts: str) -> str:
    if is_gcs(uri):
        return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(uri, *parts))


@functools.cache
def _client() -> storage.Client:
    return storage.Client()


@contextmanager
def _reporting(uri: str) -> Iterator[None]:
    """One line naming ``uri`` for what the service answered after the client's retries.

    google-cloud-storage retries transient failures (connection errors, 429, 5xx) with
    exponential backoff for up to 120 s, on reads and on writes that carry a generation
    precondition (ours all do); what is left here is persistent.
    """
    try:
        yield
    except gexc.PreconditionFailed:
        raise
    except gexc.Forbidden as e:
        raise StorageError(f"{uri}: permission denied ({e.message})") from e
    except OUTAGES as e:
        raise InfrastructureError(f"{uri}: the storage service failed ({e})") from e
    except gexc.GoogleAPIError as e:
        raise StorageError(f"{uri}: the storage service refused it ({e})") from e


def _bucket(uri: str) -> tuple[storage.Bucket, str]:
    name, prefix = split_gcs(uri)
    try:
        bucket = _client().bucket(name)
    except gauth.DefaultCredentialsError as e:
        raise StorageError(f"{uri}: no Google Cloud credentials found ({e})") from e
    with _reporting(uri):
        found = bucket.exists()
    if not found:
        raise StorageError(f"{uri}: bucket {name!r} does not exist")
    return bucket, prefix


def _taken(uri: str) -> bool:
    """True if there is something at ``uri``: a file, a folder, an object or a prefix."""
    if not is_gcs(uri):
        return os.path.exists(uri)
    bucket, name = _bucket(uri)
    with _reporting(uri):
        if name and bucket.blob(name).exists():
            return True
        prefix = f"{name}/" if name else ""
        return any(True for _ in bucket.list_blobs(prefix=prefix, max_results=1))


def check_exists(uri: str) -> None:
    """Fails with a message naming ``uri`` when there is nothing at it (file, folder or prefix)."""
    if not _taken(uri):
        what = "object or prefix" if is_gcs(uri) else "file or directory"
        raise StorageError(f"{uri}: no such {what}")


def check_bucket(uri: str) -> None:
    """For a ``gs://`` URI, fails unless its bucket exists; local paths are created on write."""
    if is_gcs(uri):
        _bucket(uri)


def download_tree(uri: str, local_dir: str) -> None:
    """Copies every object under the ``gs://`` prefix into ``local_dir``, keeping relative paths."""
    bucket, prefix = _bucket(uri)
    with _reporting(uri):
        _download_prefix(bucket, prefix, local_dir, uri)


def _download_prefix(bucket: storage.Bucket, prefix: str, local_dir: str, uri: str) -> None:
    """Lists the prefix once, then downloads its objects on a bounded pool of threads."""
    base = f"{prefix}/" if prefix else ""
    names = []
    for blob in bucket.list_blobs(prefix=base):
        rel = blob.name[len(base) :]
        if not rel or rel.endswith("/"):
            continue
        if not Path(local_dir, rel).resolve().is_relative_to(Path(local_dir).resolve()):
            raise StorageError(f"gs://{bucket.name}/{blob.name}: object name escapes its prefix")
        names.append(rel)
    if not names:
        raise StorageError(f"{uri}: no objects under this prefix")
    results = transfer_manager.download_many_to_path(
        bucket,
        names,
        destination_directory=local_dir,
        blob_name_prefix=base,
        max_workers=DOWNLOAD_THREADS,
        worker_type=transfer_manager.THREAD,
    )
    for name, result in zip(names, results, strict=True):
        if isinstance(result, Exception):
            raise StorageError(f"gs://{bucket.name}/{base}{name}: download failed ({result})")


def download_file(uri: str, local_path: str) -> None:
    bucket, name = _bucket(uri)
    with _reporting(uri):
        try:
            bucket.blob(name).download_to_filename(local_path)
        except gexc.NotFound as e:
            raise StorageError(f"{uri}: no such object") from e


def checksum(uri: str) -> str:
    """The checksum GCS keeps of a ``gs://`` object's content (MD5; CRC32C and size for a
    composite object, which has no MD5), read without downloading the object."""
    bucket, name = _bucket(uri)
    with _reporting(uri):
        blob = bucket.get_blob(name)
    if blob is None:
        raise StorageError(f"{uri}: no such object")
    return f"md5:{blob.md5_hash}" if blob.md5_hash else f"crc32c:{blob.crc32c}:{blob.size}"


def copy_to_local(uri: str, local_path: str) -> str:
    """A local path for ``uri``: a ``gs://`` object is downloaded to ``local_path``."""
    if not is_gcs(uri):
        return uri
    download_file(uri, local_path)
    return local_path


def publish_tree(local_dir: str, uri: str, marker: str) -> None:
    """Makes a finished folder visible at ``uri`` in one final step; replaces nothing.

    Locally the folder is staged under a hidden temporary name beside ``uri`` and renamed
    into place. GCS has no rename: the files go to a hidden staging prefix, are copied into
    place, and the ``marker`` file (one of the folder's) is created last. Readers take the
    folder as there only once ``marker`` is; every write carries ``ifGenerationMatch=0``, so
    of two writers racing for the same name GCS lets exactly one create it.
    """
    if not Path(local_dir, marker).is_file():
        raise StorageError(f"{local_dir}: no {marker} to publish last")
    if _taken(uri):
        raise StorageConflict(f"{uri}: already exists, not overwritten")
    if is_gcs(uri):
        with _reporting(uri):
            _publish_gcs(local_dir, uri, marker)
        return
    target = Path(uri)
    make_folders(target.parent)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        # file by file: a failure (a full disk, a read-only mount) is the system's own
        # OSError, which says what happened; copytree would fold it into one string
        for source in sorted(Path(local_dir).rglob("*")):
            copy = staging / source.relative_to(local_dir)
            if not (source.is_dir() or source.is_file()):  # a pipe, a socket: no content
                raise StorageError(f"{uri}: not published, copying {source} failed: not a file")
            copy.mkdir() if source.is_dir() else shutil.copyfile(source, copy)
        _readable_by_all(staging)
        os.rename(staging, target)  # fails where another writer's folder is already there
    except OSError as e:
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        raise StorageConflict(f"{uri}: already exists, not overwritten") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def make_folders(folder: Path) -> None:
    """``folder`` and its missing parents, each created readable by all (0755), whatever
    the process's umask: other users list and read a registry's models."""
    if folder.exists():  # one folder at a time: only what is made here is changed
        return
    make_folders(folder.parent)
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)


def _readable_by_all(folder: Path) -> None:
    """Folders 0755, files 0644, whatever the process's umask: a published version is read
    by other users (a serving process, a colleague's ``predict``)."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def remove_stale_staging(folder: str, older_than_s: float = 3600) -> list[str]:
    """Removes what killed publishes left in ``folder`` (hidden staging folders locally,
    objects under ``.staging/`` on GCS) once older than ``older_than_s``; returns them.
    Younger ones may belong to a publish still running."""
    if is_gcs(folder):
        bucket, prefix = _bucket(folder)
        cutoff = time.time() - older_than_s
        with _reporting(folder):
            stale = [
                b
                for b in bucket.list_blobs(prefix=f"{prefix}/{STAGING}/")
                if b.time_created is None or b.time_created.timestamp() <= cutoff
            ]
            for blob in stale:
                blob.delete()
        return [f"gs://{bucket.name}/{b.name}" for b in stale]
    root = Path(folder)
    cutoff = time.time() - older_than_s
    stale = [
        p
        for p in (root.iterdir() if root.is_dir() else [])
        if re.fullmatch(r"\..+\.[a-z0-9_]{8}", p.name)  # tempfile.mkdtemp's, in publish_tree
        and p.is_dir()
        and p.stat().st_mtime <= cutoff
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return [str(p) for p in stale]


def _publish_gcs(local_dir: str, uri: str, marker: str) -> None:
    bucket, prefix = _bucket(uri)
    parent, _, name = prefix.rpartition("/")
    staging = "/".join(filter(None, [parent, STAGING, f"{name}-{uuid.uuid4().hex[:12]}"]))
    root = Path(local_dir)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    payload = [f for f in files if f != marker]
    try:
        for rel in payload:
            bucket.blob(f"{staging}/{rel}").upload_from_filename(
                str(root / rel), if_generation_match=0
            )
        for rel in payload:
            source = bucket.blob(f"{staging}/{rel}")
            bucket.copy_blob(source, bucket, f"{prefix}/{rel}", if_generation_match=0)
        bucket.blob(f"{prefix}/{marker}").upload_from_filename(
            str(root / marker), if_generation_match=0
        )
    except gexc.PreconditionFailed as e:
        raise StorageConflict(f"{uri}: already exists, not overwritten") from e
    finally:  # best effort: a leftover under the hidden staging prefix is never read
        with suppress(gexc.GoogleAPIError, requests.RequestException):
            for blob in bucket.list_blobs(prefix=f"{staging}/"):
                blob.delete()


def read_text(uri: str) -> str | None:
    """A small text file's content, or None where there is none.

    Bytes that are not UTF-8 come back as surrogates (``surrogateescape``), so a damaged
    file can be told apart (``is_text``) and still be replaced by compare-and-swap."""
    if not is_gcs(uri):
        path = Path(uri)
        return _decode(path.read_bytes()) if path.is_file() else None
    bucket, name = _bucket(uri)
    with _reporting(uri):
        try:
            return _decode(bucket.blob(name).download_as_bytes())
        except gexc.NotFound:
            return None


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="surrogateescape")


def is_text(text: str) -> bool:
    """True for text read by :func:`read_text` from valid UTF-8 without control bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 32 and c not in "\n\r\t" for c in text)


def replace_text(uri: str, text: str, expected: str | None) -> None:
    """Writes a small text file only if it still holds ``expected`` (None: no file yet).

    Reading and writing are one step against other writers: on GCS the write is
    conditional on the generation that was read; locally both happen under a lock file.
    Raises StorageConflict, naming what is there, and writes nothing otherwise.
    """
    if is_gcs(uri):
        bucket, name = _bucket(uri)
        try:
            with _reporting(uri):
                blob = bucket.get_blob(name)
                generation = blob.generation if blob else 0
                current = (
                    _decode(blob.download_as_bytes(if_generation_match=generation))
                    if blob
                    else None
                )
                _check_current(uri, current, expected)
                bucket.blob(name).upload_from_string(text, if_generation_match=generation)
        except gexc.PreconditionFailed as e:
            raise StorageConflict(
                f"{uri}: changed by another writer meanwhile; not replaced"
            ) from e
        return
    path = Path(uri)
    make_folders(path.parent)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        _check_current(uri, _decode(path.read_bytes()) if path.is_file() else None, expected)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}")
        staging.write_text(text)
        staging.chmod(0o644)  # read by others (their predict, models), whatever the umask
        os.replace(staging, path)


def _check_current(uri: str, current: str | None, expected: str | None) -> None:
    if current != expected:
        found = "no file" if current is None else repr(current)
        wanted = "no file" if expected is None else repr(expected)
        raise StorageConflict(f"{uri}: holds {found}, expected {wanted}; not replaced")


def list_folders(uri: str) -> list[str]:
    """Names of the folders (``gs://`` prefixes) directly under ``uri``, sorted; hidden ones
    (a publish in progress: ``.<name>.<random>`` locally, ``.staging/`` on GCS) left out."""
    if is_gcs(uri):
        bucket, prefix = _bucket(uri)
        base = f"{prefix}/" if prefix else ""
        with _reporting(uri):
            pages = bucket.list_blobs(prefix=base, delimiter="/").pages
            names = [p[len(base) :].rstrip("/") for page in pages for p in page.prefixes]
    else:
        path = Path(uri)
        names = [p.name for p in path.iterdir() if p.is_dir()] if path.is_dir() else []
    return sorted(n for n in names if not n.startswith("."))


@contextmanager
def local_tree(uri: str) -> Iterator[str]:
    """A local folder with the files under ``uri``: itself, or a temporary download of a
    ``gs://`` prefix (removed afterwards)."""
    if not is_gcs(uri):
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="shapes-download-") as tmp:
        download_tree(uri, tmp)
        yield tmp
