"""What a mutation is, and the test files the entries name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    repeat: int = 1


EXPORT = "tests/test_export.py"
EXPORT_FAULTS = "tests/test_export_faults.py"
TRAIN = "tests/test_train.py"
SPLIT = "tests/test_split.py"
EVALUATE = "tests/test_evaluate.py"
BAD = "tests/test_bad_input.py"
ARCHIVE = "tests/test_archive.py"
E2E = "tests/test_e2e.py"
CACHE = "tests/test_backbone_cache.py"
