"""A production version whose files were damaged after publishing (issue 32): every command
that would use it names it and the repair in one line before any work, ``models`` marks
it, and ``promote`` to a healthy version repairs it. The damage is drawn: any published
file truncated, removed, changed by a byte or joined by another."""

import json
from pathlib import Path

from helpers import cli_here, tree_bytes
from hypothesis import given
from hypothesis import strategies as st

from shapes_pipeline.helpers import artifact

MODEL = "shapes-classifier"
HEALTHY, DAMAGED = "20260101T000000Z-aaaaaaaa", "20260102T000000Z-bbbbbbbb"
FILES = ("saved_model/1/saved_model.pb", "saved_model/1/variables/variables.data-00000-of-00001",
         "saved_model/1/variables/variables.index", "labels.txt")  # fmt: skip


def publish(registry: Path, version: str) -> None:
    """A version as export leaves it: its files, and metadata recording their hash."""
    folder = registry / MODEL / version
    for i, name in enumerate(FILES):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(f"{version} {i}\n".encode() * (i + 3))
    content = artifact.served_files_sha256(folder)
    (folder / "metadata.json").write_text(
        json.dumps({"version": version, "content_sha256": content})
    )


def damage(folder: Path, name: str, how: str) -> None:
    target = folder / name
    if how == "truncate":
        target.write_bytes(target.read_bytes()[:-5])
    elif how == "remove":
        target.unlink()
    elif how == "flip":
        data = bytearray(target.read_bytes())
        data[0] ^= 1
        target.write_bytes(bytes(data))
    else:  # another file in the SavedModel
        (folder / "saved_model" / "1" / "stray.bin").write_bytes(b"x")


def one_line(done, *fragments: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    (line,) = done.stderr.splitlines()
    assert "Traceback" not in done.stderr and len(line) <= 300, line
    for fragment in fragments:
        assert fragment in line, line
    return line


@given(name=st.sampled_from(FILES), how=st.sampled_from(["truncate", "remove", "flip", "add"]))
def test_a_damaged_production_version_is_named_with_its_repair(
    tmp_path_factory, demo_data, name, how
):
    root = tmp_path_factory.mktemp("damaged")
    registry = root / "reg"
    for version in (HEALTHY, DAMAGED):
        publish(registry, version)
    (registry / MODEL / "LATEST").write_text(f"{DAMAGED}\n")
    damage(registry / MODEL / DAMAGED, name, how)
    before = tree_bytes(registry)
    image = next(Path(demo_data).rglob("*.png"))
    uses = {
        "run": [
            "run",
            "--data",
            str(demo_data),
            "--registry",
            "reg",
            "--model-name",
            MODEL,
            "--dry-run",
        ],
        "predict": ["predict", "--model", "reg", str(image)],
        "predict a version": ["predict", "--model", f"reg/{MODEL}/{DAMAGED}", str(image)],
        "models": ["models", "--registry", "reg"],
        "promote it": ["promote", "--registry", "reg", "--version", DAMAGED],
    }
    for use, args in uses.items():
        done = cli_here(*args, cwd=root)
        line = one_line(done, DAMAGED, "damaged")
        assert ("promote" in line) or use == "predict a version", (use, line)
        assert tree_bytes(registry) == before, use
    listed = cli_here("models", "--registry", "reg", cwd=root)
    assert f"! {DAMAGED}" in listed.stdout and f"  {HEALTHY}" in listed.stdout
    # the repair the line names: another version promoted, and runs go on
    repaired = cli_here("promote", "--registry", "reg", "--version", HEALTHY, cwd=root)
    assert repaired.returncode == 0, repaired.stderr
    again = cli_here(*uses["run"], cwd=root)
    assert again.returncode == 0, again.stderr
