"""What a command's exit status says, and its one line on a failure: shared by every
command of the command line."""

from __future__ import annotations

import errno
import sys

EXIT_OK, EXIT_STEP_FAILED, EXIT_BAD_INPUT, EXIT_GATE_REFUSED = 0, 1, 2, 3

# The system's failures, not the user's input: the machine or its storage.
INFRASTRUCTURE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """One line on stderr, then the exit."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def exit_code_of(error: OSError) -> int:
    """2 for what the user can fix by another path or permission; 1 for a full or
    read-only disk or an I/O error, which no other input fixes."""
    return EXIT_STEP_FAILED if error.errno in INFRASTRUCTURE_ERRNOS else EXIT_BAD_INPUT
