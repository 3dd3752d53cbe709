"""What every KFP component body shares: its events, its timing, and one clean line for
bad input.

Kept free of heavy imports so a component can enter :func:`step` before TensorFlow loads,
and the time it reports includes that import.
"""

from __future__ import annotations

import errno
import json
import platform
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata as importlib_metadata

# A step's log line that starts with this is an event for whoever watches the run (the
# local runner shows progress from them); the rest of the line is JSON.
EVENT = "@shapes-event "

# Where a step's seconds go, for `make bench`: the step's code calls ``lap`` as it passes
# from one to the next; what follows its last lap counts as ``work``.
PHASES = ("import", "build", "trace", "work", "save")
_laps: dict[str, float] = {}
_last_lap = [time.perf_counter()]


def lap(phase: str) -> None:
    """The seconds since the step began, or since the last lap, were spent on ``phase``
    (one of PHASES): ``import`` (loading libraries), ``build`` (the network built, or a
    SavedModel loaded), ``trace`` (TensorFlow functions traced), ``save`` (a SavedModel
    written), ``work`` (the rest: reading, computing, writing)."""
    now = time.perf_counter()
    _laps[phase] = _laps.get(phase, 0.0) + now - _last_lap[0]
    _last_lap[0] = now


class InputError(ValueError):
    """Input the user must fix (data, weights, storage); the message names the path or value."""


class InfrastructureError(RuntimeError):
    """The machine or a service failed (storage answering 5xx after the client's retries,
    unreachable): no other input fixes it, a later try may; the message names the cause."""


# The system's failures, not the user's input: the machine or its storage.
INFRASTRUCTURE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
LINE_LIMIT = 300  # the most characters of a failure's line


def one_line(text: str, limit: int = LINE_LIMIT) -> str:
    """``text`` as one line of a terminal or a log: every character that is not printable
    (a line break, a control character, a line separator in a file or class name) written
    as its escape, so no name can start a line of its own (such as a forged event), and
    at most ``limit`` characters, its middle cut so the start (what) and end (what to do)
    remain."""
    line = printable(text)
    if len(line) > limit:
        half = (limit - 5) // 2
        line = f"{line[:half]} ... {line[-half:]}"
    return line


def printable(text: str) -> str:
    """``text`` with each character that is not printable written as its escape."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def event(kind: str, **fields: object) -> None:
    """One event line in the step's log: ``start``, ``end``, ``epoch``."""
    print(EVENT + json.dumps({"event": kind, **fields}), flush=True)


def parse_event(line: str) -> dict | None:
    """The event a log line carries, or None."""
    if not line.startswith(EVENT):
        return None
    try:
        found = json.loads(line[len(EVENT) :])
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) and "event" in found else None


@contextmanager
def step(name: str, metadata: dict, **fields: object) -> Iterator[None]:
    """Records the step's seconds, where they went (``lap``) and peak memory (the process's
    maximum resident set) in ``metadata`` and in its ``start``/``end`` events; turns an
    :class:`InputError` into one line. ``fields`` go into both events (an extract task's ``group``).

    The line goes to the step's log and the step exits non-zero, without a traceback.
    """
    event("start", step=name, **fields)
    started = time.perf_counter()
    _laps.clear()
    _last_lap[0] = started
    try:
        yield
    except (InputError, InfrastructureError) as e:
        raise SystemExit(one_line(f"error: {e}")) from None
    except OSError as e:  # the machine's storage: its own words, not a traceback
        if e.errno not in INFRASTRUCTURE_ERRNOS:
            raise
        raise SystemExit(one_line(f"error: {e.filename or ''}: {e.strerror}")) from None
    lap("work")
    metadata["seconds"] = round(time.perf_counter() - started, 2)
    metadata["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    metadata["phase_seconds"] = {p: round(_laps.get(p, 0.0), 2) for p in PHASES}
    event(
        "end",
        step=name,
        seconds=metadata["seconds"],
        peak_memory_mb=metadata["peak_memory_mb"],
        phase_seconds=metadata["phase_seconds"],
        **fields,
    )


def package_versions(*names: str) -> dict[str, str | None]:
    """The installed versions of ``names`` and Python's, for a model's provenance."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions
