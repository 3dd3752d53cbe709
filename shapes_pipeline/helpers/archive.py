"""A ``.zip`` of the Kaggle layout as input data, unpacked only after every entry is checked.

Archives come from other people's buckets, so an entry may try to write outside the folder
it is unpacked to (``../x``, ``/etc/x``, a symbolic link) or be a zip bomb (a small file
that inflates to gigabytes). Both are refused, naming the entry, before anything is
written. Headers can lie: zipfile never inflates an entry past its declared size and
checks its CRC, so a lie ends as a damaged-entry error.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shapes_pipeline.helpers.dataset import DataError

SKIPPED = "__MACOSX"  # resource forks that macOS's archiver adds; not data
READABLE_COMPRESSION = {
    zipfile.ZIP_STORED,
    zipfile.ZIP_DEFLATED,
    zipfile.ZIP_BZIP2,
    zipfile.ZIP_LZMA,
}
MAX_NAME_BYTES = 255  # a path component, on ext4, XFS, APFS and NTFS alike
# A whole entry name: macOS's PATH_MAX, and well within Linux's 4096 with the folder it goes to.
MAX_PATH_BYTES = 1024
MAX_SHOWN = 100  # characters of an entry's name that an error shows


@dataclass(frozen=True)
class Limits:
    """What an archive may hold: generous for real data sets; tests pass small ones."""

    entries: int = 100_000
    total_bytes: int = 4 * 2**30  # inflated, all entries together
    ratio: int = 100  # inflated / compressed size of one entry (PNGs compress about 1:1)
    ratio_from_bytes: int = 2**20  # smaller entries are not checked for their ratio


def check_entries(
    archive: zipfile.ZipFile, shown_as: str, limits: Limits = Limits()
) -> list[zipfile.ZipInfo]:
    """The entries to unpack; a DataError for the first one that is unsafe."""
    infos = archive.infolist()
    if len(infos) > limits.entries:
        raise DataError(f"{shown_as}: {len(infos)} entries, more than {limits.entries}")
    total = 0
    for info in infos:
        name = _shown(info.filename)
        parts = PurePosixPath(info.filename).parts
        if (
            info.filename.startswith("/")
            or "\\" in info.filename
            or ".." in parts
            or (parts and ":" in parts[0])
        ):
            raise DataError(
                f"{shown_as}: entry {name} would be written outside the folder "
                "the archive is unpacked to"
            )
        if not parts and not info.is_dir():  # "." or "": the folder itself, as a file
            raise DataError(f"{shown_as}: entry {name} has no file name")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{shown_as}: entry {name} is a symbolic link")
        unreadable = _unreadable(info)
        if unreadable:
            raise DataError(f"{shown_as}: entry {name} {unreadable}")
        if (
            info.file_size > limits.ratio * max(info.compress_size, 1)
            and info.file_size > limits.ratio_from_bytes
        ):
            raise DataError(
                f"{shown_as}: entry {name} inflates {info.compress_size} bytes to "
                f"{info.file_size} (more than {limits.ratio}x): a zip bomb?"
            )
        total += info.file_size
        if total > limits.total_bytes:
            raise DataError(f"{shown_as}: inflates to more than {limits.total_bytes} bytes")
    packed = sum(info.compress_size for info in infos)
    if total > limits.ratio * max(packed, 1) and total > limits.ratio_from_bytes:
        raise DataError(
            f"{shown_as}: its entries inflate {packed} bytes to {total} (more than "
            f"{limits.ratio}x as a whole): a zip bomb?"
        )
    _check_names(infos, shown_as)
    return [i for i in infos if PurePosixPath(i.filename).parts[:1] != (SKIPPED,)]


def _shown(name: str) -> str:
    """An entry's name as an error shows it: escaped, so on one line, and a long one cut."""
    shown = repr(name)
    if len(shown) <= MAX_SHOWN:
        return shown
    head = name[:MAX_SHOWN]
    while len(repr(head)) > MAX_SHOWN - 30:
        head = head[:-1]
    return f"{head!r}... ({len(name.encode())} bytes)"


def _unreadable(info: zipfile.ZipInfo) -> str | None:
    """Why zipfile could not unpack the entry, if it could not."""
    if info.flag_bits & 0x1:
        return "is encrypted; unpack the archive with its password and zip it again"
    if info.compress_type not in READABLE_COMPRESSION:
        return f"uses compression method {info.compress_type}, which cannot be read here"
    return None


def _check_names(infos: list[zipfile.ZipInfo], shown_as: str) -> None:
    """No name both a file and a folder (as written: ``a/./b`` is ``a/b``, and a folder
    entry ``a/`` is a folder); no name longer than a filesystem takes."""
    paths = [(PurePosixPath(i.filename), i.is_dir()) for i in infos]
    files = {str(p) for p, is_dir in paths if not is_dir}
    folders = {str(q) for p, is_dir in paths for q in [*p.parents, *([p] if is_dir else [])]}
    clash = sorted(files & (folders - {"."}))
    if clash:
        raise DataError(
            f"{shown_as}: {_shown(clash[0])} is both a file and a folder in the archive"
        )
    for info in infos:
        if len(info.filename.encode()) > MAX_PATH_BYTES:
            raise DataError(
                f"{shown_as}: entry {_shown(info.filename)} has a path longer than "
                f"{MAX_PATH_BYTES} bytes"
            )
        for part in PurePosixPath(info.filename).parts:
            if len(part.encode()) > MAX_NAME_BYTES:
                raise DataError(
                    f"{shown_as}: entry {_shown(info.filename)} has a name longer than "
                    f"{MAX_NAME_BYTES} bytes, which no usual filesystem takes"
                )


def extract(
    path: str | Path, out_dir: str | Path, shown_as: str, limits: Limits = Limits()
) -> Path:
    """Unpacks the checked archive into ``out_dir``; returns the data folder in it (the one
    top-level folder when the archive wraps everything in one, as Kaggle's does)."""
    out = Path(out_dir)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{shown_as}: not a readable zip archive ({e})") from e
    with archive:
        for info in check_entries(archive, shown_as, limits):
            target = out / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, length=2**20)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise DataError(
                    f"{shown_as}: entry {_shown(info.filename)} is damaged ({e})"
                ) from e
    out.mkdir(parents=True, exist_ok=True)  # an archive of folders only, or of nothing
    top = [p for p in out.iterdir() if not p.name.startswith(".")]
    if len(top) == 1 and top[0].is_dir():
        return top[0]
    return out
