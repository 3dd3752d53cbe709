"""Reads and writes local paths and ``gs://`` URIs, so every step takes either.

GCS goes through google-cloud-storage (``tf.io.gfile`` ignores ``STORAGE_EMULATOR_HOST``).
With that variable set, the client talks to the emulator anonymously, which is how tests
run against a real storage API without credentials.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from google.api_core import exceptions as gexc
from google.auth import exceptions as gauth
from google.cloud import storage

from components.step import InputError


class StorageError(InputError):
    """A path, bucket or object that cannot be used; the message names it."""


def is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> (``bucket``, ``a/b``); the prefix has no leading/trailing slash."""
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket name in the gs:// URI")
    return bucket, prefix.strip("/")


def join(uri: str, *parts: str) -> str:
    if is_gcs(uri):
        return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(uri, *parts))


@functools.cache
def _client() -> storage.Client:
    return storage.Client()


def _bucket(uri: str) -> tuple[storage.Bucket, str]:
    name, prefix = split_gcs(uri)
    try:
        bucket = _client().bucket(name)
    except gauth.DefaultCredentialsError as e:
        raise StorageError(f"{uri}: no Google Cloud credentials found ({e})") from e
    try:
        found = bucket.exists()
    except gexc.GoogleAPIError as e:
        raise StorageError(f"{uri}: cannot reach bucket {name!r} ({e})") from e
    if not found:
        raise StorageError(f"{uri}: bucket {name!r} does not exist")
    return bucket, prefix


def _has_objects(bucket: storage.Bucket, name: str) -> bool:
    """True if ``name`` is an object or a folder-like prefix (``name/...``) in ``bucket``."""
    if name and bucket.blob(name).exists():
        return True
    prefix = f"{name}/" if name else ""
    return any(True for _ in bucket.list_blobs(prefix=prefix, max_results=1))


def check_exists(uri: str) -> None:
    """Fails with a message naming ``uri`` when there is nothing at it (file, folder or prefix)."""
    if is_gcs(uri):
        bucket, name = _bucket(uri)
        if not _has_objects(bucket, name):
            raise StorageError(f"{uri}: no such object or prefix")
    elif not os.path.exists(uri):
        raise StorageError(f"{uri}: no such file or directory")


def check_bucket(uri: str) -> None:
    """For a ``gs://`` URI, fails unless its bucket exists; local paths are created on write."""
    if is_gcs(uri):
        _bucket(uri)


def download_tree(uri: str, local_dir: str) -> None:
    """Copies every object under the ``gs://`` prefix into ``local_dir``, keeping relative paths."""
    bucket, prefix = _bucket(uri)
    base = f"{prefix}/" if prefix else ""
    found = False
    for blob in bucket.list_blobs(prefix=base):
        rel = blob.name[len(base) :]
        if not rel or rel.endswith("/"):
            continue
        target = Path(local_dir, rel).resolve()
        if not target.is_relative_to(Path(local_dir).resolve()):
            raise StorageError(f"gs://{bucket.name}/{blob.name}: object name escapes its prefix")
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))
        found = True
    if not found:
        raise StorageError(f"{uri}: no objects under this prefix")


def download_file(uri: str, local_path: str) -> None:
    bucket, name = _bucket(uri)
    try:
        bucket.blob(name).download_to_filename(local_path)
    except gexc.NotFound as e:
        raise StorageError(f"{uri}: no such object") from e


def upload_tree_new(local_dir: str, uri: str) -> None:
    """Uploads a folder to a prefix that must not exist yet, never replacing an object.

    The prefix is checked first; on real GCS ``if_generation_match=0`` also makes the
    service reject each write whose object appeared meanwhile (a concurrent writer).
    """
    bucket, prefix = _bucket(uri)
    if _has_objects(bucket, prefix):
        raise StorageError(f"{uri}: already exists, not overwritten")
    root = Path(local_dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = "/".join([prefix, path.relative_to(root).as_posix()]).lstrip("/")
        try:
            bucket.blob(name).upload_from_filename(str(path), if_generation_match=0)
        except gexc.PreconditionFailed as e:
            raise StorageError(f"gs://{bucket.name}/{name}: already exists, not overwritten") from e


def copy_to_local(uri: str, local_path: str) -> str:
    """A local path for ``uri``: a ``gs://`` object is downloaded to ``local_path``."""
    if not is_gcs(uri):
        return uri
    download_file(uri, local_path)
    return local_path


def publish_tree(local_dir: str, uri: str) -> None:
    """Makes a finished folder visible at ``uri``; fails if anything is already there.

    Locally the folder is staged beside its destination and renamed in one step, so a
    reader never sees half of it.
    """
    if is_gcs(uri):
        upload_tree_new(local_dir, uri)
        return
    target = Path(uri)
    if target.exists():
        raise StorageError(f"{uri}: already exists, not overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(local_dir, staging)
    try:
        os.rename(staging, target)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise StorageError(f"{uri}: already exists, not overwritten") from e


def read_text(uri: str) -> str | None:
    """A small text file's content, or None where there is none."""
    if not is_gcs(uri):
        path = Path(uri)
        return path.read_text() if path.is_file() else None
    bucket, name = _bucket(uri)
    try:
        return bucket.blob(name).download_as_text()
    except gexc.NotFound:
        return None


def write_text(uri: str, text: str) -> None:
    """Replaces a small text file in one step: a reader sees the old content or the new."""
    if is_gcs(uri):
        bucket, name = _bucket(uri)
        bucket.blob(name).upload_from_string(text)  # a GCS object write is atomic
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(text)
    os.replace(staging, path)


def list_folders(uri: str) -> list[str]:
    """Names of the folders (``gs://`` prefixes) directly under ``uri``, sorted; hidden ones
    (a local publish in progress is ``.<name>.partial``) left out."""
    if is_gcs(uri):
        bucket, prefix = _bucket(uri)
        base = f"{prefix}/" if prefix else ""
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
