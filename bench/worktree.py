"""Older revisions of this repository, checked out beside it, so a bench can run their code
on the same data in the same session (put first on ``PYTHONPATH``).

A revision's library (``shapes_pipeline/``) is its own; ``shapes_pipeline.kubeflow`` (its
``pipeline.py`` and ``components/``) still resolves to this checkout's, through the editable
install, so two revisions whose DAGs differ are not compared by this. Revisions before the
layers (``components/cli.py``) run wholly from their worktree."""

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


def cli_module(code: Path) -> str:
    """The command line's module in the checkout ``code``: where it is before the layers."""
    return (
        "shapes_pipeline.runners.cli" if (code / "shapes_pipeline").is_dir() else "components.cli"
    )
