"""The registry's layout on a local folder: versions, the production pointer, resolving."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.cloud import storage as gcs
from helpers import FAST, cli_here, tree_bytes, upload_folder

from shapes_pipeline.helpers import registry, storage
from shapes_pipeline.helpers.step import InputError


def _version(root, name: str, accuracy: float) -> None:
    folder = root / "shapes-classifier" / name
    folder.mkdir(parents=True)
    metadata = {
        "version": name,
        "uri": f"/elsewhere/{name}",
        "metrics": {"test_accuracy": accuracy},
        "created": f"{name[:4]}-01-01T00:00:00+00:00",
        "backbone": "MobileNet",
    }
    (folder / "metadata.json").write_text(json.dumps(metadata))


def test_versions_mark_the_production_one_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _version(tmp_path / "reg", "20260101T000000Z-aaaa", 0.8)
    _version(tmp_path / "reg", "20260102T000000Z-bbbb", 0.9)
    (tmp_path / "reg" / "shapes-classifier" / ".20260103T000000Z-cccc.partial").mkdir()
    assert registry.versions("reg", "shapes-classifier")[0]["production"] is False
    registry.promote("reg", "shapes-classifier", "20260102T000000Z-bbbb", replaces=None)
    found = registry.versions("reg", "shapes-classifier")  # a relative registry path
    assert [(v["version"], v["production"]) for v in found] == [
        ("20260101T000000Z-aaaa", False),
        ("20260102T000000Z-bbbb", True),
    ]
    assert (
        registry.resolve("reg", "shapes-classifier")
        == "reg/shapes-classifier/20260102T000000Z-bbbb"
    )
    version = "reg/shapes-classifier/20260101T000000Z-aaaa"
    assert registry.resolve(version, "shapes-classifier") == version
    with pytest.raises(InputError, match="no other/LATEST"):
        registry.resolve("reg", "other")


# ------------------------------------------------ registry states that would jam a run

V1, V2 = "20260101T000000Z-aaaa", "20260102T000000Z-bbbb"
MODEL = "shapes-classifier"


def _latest(raw: bytes):
    return lambda reg: (reg / MODEL / "LATEST").write_bytes(raw)


def _unpublished(reg):
    (reg / MODEL / "20260103T000000Z-cccc").mkdir()
    (reg / MODEL / "LATEST").write_text("20260103T000000Z-cccc\n")


JAMS = {
    "latest-empty": (_latest(b""), "LATEST is empty"),
    "latest-blank": (_latest(b"\n \n"), "LATEST is empty"),
    "latest-not-text": (_latest(b"\xff\xfe\x00garbage"), "LATEST is not text"),
    "latest-missing-version": (
        _latest(b"20250101T000000Z-dddd\n"),
        "names version 20250101T000000Z-dddd, which does not exist",
    ),
    "latest-unpublished": (_unpublished, "names version 20260103T000000Z-cccc, which is not"),
    "latest-outside": (_latest(b"../../etc\n"), "names '../../etc', which is not a version"),
    "metadata-broken": (
        lambda reg: (reg / MODEL / V1 / "metadata.json").write_text("{not json"),
        f"{V1}/metadata.json: not valid JSON metadata",
    ),
}


def _registry(root) -> dict:
    _version(root, V1, 0.8)
    _version(root, V2, 0.9)
    (root / MODEL / "LATEST").write_text(f"{V2}\n")
    return tree_bytes(root)


def run_here(demo_data, cwd, *options: str):
    """``run`` of the demo data on the registry ``reg`` (its model named), fast."""
    return cli_here(
        "run", "--data", str(demo_data), "--registry", "reg", "--model-name", MODEL, *FAST,
        *options, cwd=cwd,
    )  # fmt: skip


@pytest.mark.parametrize("case", JAMS)
def test_a_jammed_registry_stops_run_models_and_predict_in_one_line(case, demo_data, tmp_path):
    """Before any step, each names the file and the repair; nothing is stored."""
    jam, message = JAMS[case]
    _registry(tmp_path / "reg")
    jam(tmp_path / "reg")
    before = tree_bytes(tmp_path / "reg")
    done = run_here(demo_data, tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    if case.startswith("latest"):
        assert f"{MODEL}/LATEST" in done.stderr  # the registry: in the repair
        assert f"shapes-pipeline promote --registry {tmp_path / 'reg'} " in done.stderr
    assert tree_bytes(tmp_path / "reg") == before and not (tmp_path / "runs").exists()
    image = next((demo_data / "circles").iterdir())
    for command in (["models"], ["predict", "--model", "reg", str(image)]):
        args = [*command, "--registry", "reg"] if command == ["models"] else command
        shown = cli_here(*args, cwd=tmp_path)
        assert shown.returncode == 2, (command, shown.stderr)
        assert shown.stderr.startswith("error: ") and shown.stderr.count("\n") == 1
    listed = cli_here("models", "--registry", "reg", cwd=tmp_path).stdout
    if case != "metadata-broken":  # the versions are listed, and LATEST marked broken
        assert V1 in listed and "! LATEST is broken: no production version" in listed


def test_the_jam_of_an_empty_latest_no_longer_piles_up_versions(demo_data, tmp_path):
    """Yesterday: each run stored a version, failed to promote it and exited 2. Now both
    runs stop before training; promote repairs LATEST; the next run would go through."""
    _registry(tmp_path / "reg")
    (tmp_path / "reg" / MODEL / "LATEST").write_text("")
    for _ in range(2):
        done = run_here(demo_data, tmp_path)
        assert done.returncode == 2 and "LATEST is empty" in done.stderr
    assert sorted(p.name for p in (tmp_path / "reg" / MODEL).iterdir()) == [V1, V2, "LATEST"]
    repaired = cli_here("promote", "--registry", "reg", "--version", V1, cwd=tmp_path)
    assert repaired.returncode == 0 and f"production is now {V1} (was none)" in repaired.stdout
    dry = run_here(demo_data, tmp_path, "--dry-run")
    assert dry.returncode == 0, dry.stderr


def test_a_registry_that_is_a_file_or_cannot_be_written(demo_data, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    done = cli_here("run", "--data", str(demo_data), "--registry", "file", *FAST, cwd=tmp_path)
    assert done.returncode == 2 and "file: a file, not a registry folder" in done.stderr
    (tmp_path / "locked").mkdir(mode=0o555)
    # As root, only without the capabilities that override file permissions:
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]
    done = subprocess.run(
        [*(prefix if os.geteuid() == 0 else []), sys.executable, "-m",
         "shapes_pipeline.runners.cli", "run",
         "--data", str(demo_data), "--registry", "locked/reg", *FAST],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"{tmp_path / 'locked'}: cannot create or write the registry here" in done.stderr
    assert list((tmp_path / "locked").iterdir()) == [] and not (tmp_path / "runs").exists()


@pytest.fixture(params=["local", "gcs"])
def populated(request, tmp_path) -> str:
    """A registry with two published versions, V2 in production; local or on GCS."""
    _registry(tmp_path / "reg")
    if request.param == "local":
        return str(tmp_path / "reg")
    bucket = request.getfixturevalue("strict_bucket")
    return upload_folder(bucket, tmp_path / "reg", "registry")


def test_promote_rolls_back_and_refuses_what_is_not_published(populated, tmp_path):
    rolled = cli_here("promote", "--registry", populated, "--version", V1, cwd=tmp_path)
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.strip() == f"{MODEL}: production is now {V1} (was {V2})"
    assert registry.production_version(populated, MODEL) == V1
    for version, message in (
        ("20990101T000000Z-ffff", "no published version 20990101T000000Z-ffff"),
        ("../../x", "name '../../x'"),
    ):
        refused = cli_here("promote", "--registry", populated, "--version", version, cwd=tmp_path)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert registry.production_version(populated, MODEL) == V1


def test_promote_repairs_a_latest_that_is_not_text(populated, tmp_path):
    latest = storage.join(populated, MODEL, "LATEST")
    if storage.is_gcs(latest):
        bucket, name = storage.split_gcs(latest)
        gcs.Client().bucket(bucket).blob(name).upload_from_string(b"\xff\xfe garbage")
    else:
        Path(latest).write_bytes(b"\xff\xfe garbage")
    with pytest.raises(registry.RegistryError, match="is not text"):
        registry.production_version(populated, MODEL)
    registry.promote_to(populated, MODEL, V1)
    assert registry.production_version(populated, MODEL) == V1
