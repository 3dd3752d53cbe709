"""A registry's files as tests write them by hand (a published version, LATEST), and the
repair the registry's refusals name: shared by test_mutants_registry.py and
test_mutants_registry_versions.py."""

import json
from pathlib import Path

MODEL = "shapes"
V1, V2, V3 = "20260101T000000Z-aaaa1111", "20260102T000000Z-bbbb2222", "20260103T000000Z-cccc3333"


def repair(reg) -> str:
    return (
        f"repair: shapes-pipeline promote --registry {reg} --model-name {MODEL} --version VERSION"
    )


def publish(reg: Path, version: str, **metadata) -> dict:
    """A published version: its folder with metadata.json."""
    folder = reg / MODEL / version
    folder.mkdir(parents=True, exist_ok=True)
    found = {"version": version, **metadata}
    (folder / "metadata.json").write_text(json.dumps(found))
    return found


def latest(reg: Path, text: str | bytes) -> None:
    (reg / MODEL).mkdir(parents=True, exist_ok=True)
    path = reg / MODEL / "LATEST"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
