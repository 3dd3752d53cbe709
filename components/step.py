"""What every KFP component body shares: its timing, and one clean line for bad input.

Kept free of heavy imports so a component can enter :func:`step` before TensorFlow loads,
and the time it reports includes that import.
"""

from __future__ import annotations

import platform
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata as importlib_metadata


class InputError(ValueError):
    """Input the user must fix (data, weights, storage); the message names the path or value."""


@contextmanager
def step(metadata: dict) -> Iterator[None]:
    """Records the step's seconds and peak memory (the process's maximum resident set) in
    ``metadata``; turns an :class:`InputError` into one line.

    The line goes to the step's log and the step exits non-zero, without a traceback.
    """
    started = time.perf_counter()
    try:
        yield
    except InputError as e:
        raise SystemExit(f"error: {e}") from None
    metadata["seconds"] = round(time.perf_counter() - started, 2)
    metadata["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def package_versions(*names: str) -> dict[str, str | None]:
    """The installed versions of ``names`` and Python's, for a model's provenance."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions
