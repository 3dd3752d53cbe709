"""What a command's exit status says, and its one line on a failure: shared by every
command of the command line."""

from __future__ import annotations

import sys
import tempfile
import traceback
from typing import NoReturn

from shapes_pipeline.helpers.step import INFRASTRUCTURE_ERRNOS, one_line

EXIT_OK, EXIT_STEP_FAILED, EXIT_BAD_INPUT, EXIT_GATE_REFUSED = 0, 1, 2, 3


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """One line on stderr (:func:`one_line`: whatever it quotes), then the exit."""
    print(one_line(f"error: {message}"), file=sys.stderr)
    sys.exit(code)


def exit_code_of(error: OSError) -> int:
    """2 for what the user can fix by another path or permission; 1 for a full or
    read-only disk or an I/O error, which no other input fixes."""
    return EXIT_STEP_FAILED if error.errno in INFRASTRUCTURE_ERRNOS else EXIT_BAD_INPUT


def internal_error(command: str, error: Exception) -> str:
    """The line for a bug or a broken invariant (no input of the user's causes it): what
    failed and the log holding its traceback, written to a file of its own."""
    what = " ".join(f"{type(error).__name__}: {error}".split())[:160]
    try:
        with tempfile.NamedTemporaryFile(
            "w", prefix=f"shapes-pipeline-{command}-", suffix=".log", delete=False
        ) as log:
            traceback.print_exception(error, file=log)
    except OSError as e:
        return f"internal error ({what}); its traceback could not be written ({e.strerror})"
    return f"internal error ({what}); the traceback is in {log.name}: please report it"
