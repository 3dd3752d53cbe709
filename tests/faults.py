"""Real faults for tests: a small tmpfs filled up, a read-only bind mount (both need the
right to mount, else the test is skipped), and the command prefix that runs a process as
an unprivileged user."""

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

# Root gives up the capabilities that override file permissions; anyone else already lacks them.
UNPRIVILEGED = (
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
)


@contextmanager
def mounted(folder: Path, *options: str):
    """A real mount at ``folder`` for the test's length; skipped where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(folder)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@contextmanager
def full_disk(folder: Path):
    with mounted(folder, "-t", "tmpfs", "-o", "size=64k", "tmpfs"):
        with pytest.raises(OSError), open(folder / "filler", "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
        yield folder


@contextmanager
def read_only(folder: Path):
    """``folder`` as a read-only view of ``<folder>-source`` (which a test may fill first)."""
    source = folder.parent / f"{folder.name}-source"
    source.mkdir(exist_ok=True)
    with mounted(folder, "--bind", "-o", "ro", str(source)):
        yield folder
