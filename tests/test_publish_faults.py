"""Publishing into a local registry meets real faults (issue 32): a full tmpfs and a
read-only bind mount are named as what they are (not "already exists"), exit 1, and leave
no version and no staging behind; under a restrictive umask what is published (the
model's folder, its versions, LATEST) is readable by another user and writable by none."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from faults import UNPRIVILEGED, full_disk, read_only
from helpers import cli_here

from shapes_pipeline.helpers import storage

MODEL, VERSION = "shapes-classifier", "20260101T000000Z-0123abcd"


def finished_folder(root: Path) -> Path:
    """A version's files as export stages them: a SavedModel's, labels, metadata last."""
    folder = root / "staged"
    (folder / "saved_model" / "1" / "variables").mkdir(parents=True)
    (folder / "saved_model" / "1" / "saved_model.pb").write_bytes(b"x" * 40_000)
    (folder / "saved_model" / "1" / "variables" / "variables.index").write_bytes(b"i" * 9_000)
    (folder / "labels.txt").write_text("a\nb\n")
    (folder / "metadata.json").write_text(f'{{"version": "{VERSION}"}}')
    return folder


@pytest.mark.parametrize(
    ("fault", "cause"),
    [(full_disk, "No space left on device"), (read_only, "Read-only file system")],
    ids=["full-disk", "read-only"],
)
def test_publishing_onto_a_failing_disk_names_the_fault_and_leaves_nothing(tmp_path, fault, cause):
    staged = finished_folder(tmp_path)
    with fault(tmp_path / "disk") as disk:
        registry = disk / "reg"
        if fault is full_disk:
            (registry / MODEL).mkdir(parents=True)  # the registry exists; the disk is full
        target = str(registry / MODEL / VERSION)
        with pytest.raises(OSError) as failed:
            storage.publish_tree(str(staged), target, marker="metadata.json")
        assert not isinstance(failed.value, storage.StorageError)
        assert os.strerror(failed.value.errno) == cause
        left = sorted(p.name for p in (registry / MODEL).iterdir()) if registry.exists() else []
        assert left == []  # no version, no staging folder


def test_promote_on_a_read_only_registry_is_exit_1_naming_it(tmp_path):
    """The CLI's line for the same fault: the system's words, exit 1, no traceback."""
    source = tmp_path / "disk-source" / "reg" / MODEL / VERSION
    source.mkdir(parents=True)
    (source / "metadata.json").write_text(f'{{"version": "{VERSION}"}}')
    with read_only(tmp_path / "disk") as disk:
        done = cli_here("promote", "--registry", str(disk / "reg"), "--version", VERSION,
                        cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert "Read-only file system" in line and "Traceback" not in done.stderr


def test_what_is_published_under_umask_077_is_readable_by_another_user(tmp_path):
    staged = finished_folder(tmp_path)
    shared = Path(tempfile.mkdtemp(prefix="shapes-shared-"))  # pytest's tmp is private
    shared.chmod(0o711)  # an existing folder keeps its mode: only what is made is set
    registry = shared / "team" / "reg"
    previous = os.umask(0o077)
    try:
        storage.publish_tree(str(staged), str(registry / MODEL / VERSION), marker="metadata.json")
        storage.replace_text(str(registry / MODEL / "LATEST"), f"{VERSION}\n", expected=None)
    finally:
        os.umask(previous)
    published = [registry.parent, registry, *registry.rglob("*")]  # made here: all but shared
    assert shared.stat().st_mode & 0o777 == 0o711
    assert (registry / MODEL / "LATEST").stat().st_mode & 0o777 == 0o644
    for path in published:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o022 == 0, (path, oct(mode))  # never writable by others
        assert mode & 0o004 or path.name.startswith("."), (path, oct(mode))  # but a lock
        assert not path.is_dir() or mode & 0o001, (path, oct(mode))
    # another user reads LATEST and the version's files, and lists the versions
    read = subprocess.run(
        [*UNPRIVILEGED, "sh", "-c", f"cat {registry / MODEL / 'LATEST'} && ls {registry / MODEL}"
         f" && cat {registry / MODEL / VERSION / 'labels.txt'}"],
        capture_output=True, text=True,
    )  # fmt: skip
    shutil.rmtree(shared)
    assert read.returncode == 0, read.stderr
    assert VERSION in read.stdout and "a\nb" in read.stdout
