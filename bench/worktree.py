"""Older revisions of this repository, checked out beside it, so a bench can run their code
on the same data in the same session (put first on ``PYTHONPATH``)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def checkouts(revisions: list[str], folder: Path) -> Iterator[dict[str, Path]]:
    """Each revision in a temporary git worktree under ``folder``; removed afterwards."""
    trees = {}
    try:
        for revision in revisions:
            tree = folder / f"code-{revision}"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), revision],
                check=True, capture_output=True,
            )  # fmt: skip
            trees[revision] = tree
        yield trees
    finally:
        for tree in trees.values():
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
            )  # fmt: skip
