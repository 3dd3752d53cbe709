"""Export under races, crashes and killed runs: the registry stays as it was or holds one
whole version, never two copies of a model, on local folders and on GCS.

The races and crashes run against fake-gcs-server (``strict_bucket``), which enforces
GCS's generation preconditions; gcp-storage-emulator accepts every conditional write.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import EXPORTED, Interleaving, published, race, run_export

from shapes_pipeline.helpers import registry, storage
from shapes_pipeline.helpers.registry import PromotionConflict
from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.steps import export as export_module
from shapes_pipeline.steps.verify import verify

pytestmark = pytest.mark.slow  # trains, exports or starts a browser


@pytest.fixture(params=["local", "gcs"])
def registry_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    bucket = request.getfixturevalue("strict_bucket")
    return f"gs://{bucket.name}/registry"


def test_a_rerun_after_a_failure_past_publishing_does_not_store_the_model_twice(
    trained, split_dir, evaluated, tmp_path, monkeypatch
):
    root = str(tmp_path / "registry")
    promote = export_module.promote

    def crash(*args, **kwargs):
        raise OSError("the node went away")

    monkeypatch.setattr(export_module, "promote", crash)
    with pytest.raises(OSError):
        run_export(trained, split_dir, evaluated, root)
    (stored,) = registry.versions(root, EXPORTED)
    assert not stored["production"]
    monkeypatch.setattr(export_module, "promote", promote)
    again = run_export(trained, split_dir, evaluated, root)
    assert again == {k: v for k, v in stored.items() if k != "production"}
    assert published(root) == [stored["version"]]
    assert registry.production_version(root, EXPORTED) == stored["version"]


def test_two_writers_racing_for_the_same_version_name(registry_uri, tmp_path, monkeypatch):
    """Same model, same second (so the same name and the same files, but each its own
    metadata), both past the "is the name free?" check: one creates the version, the other
    fails and replaces nothing (locally the rename refuses an existing folder; on GCS the
    marker's upload is refused by the generation precondition)."""
    folders = []
    for writer in ("a", "b"):
        folder = tmp_path / writer
        (folder / "saved_model" / "1").mkdir(parents=True)
        (folder / "saved_model" / "1" / "saved_model.pb").write_bytes(b"same model")
        (folder / "metadata.json").write_text(json.dumps({"version": "v", "writer": writer}))
        folders.append(folder)
    uri = storage.join(registry_uri, EXPORTED, "20260101T000000Z-same")
    Interleaving(monkeypatch, "_taken")

    def publish(folder):
        storage.publish_tree(str(folder), uri, marker="metadata.json")
        return json.loads((folder / "metadata.json").read_text())

    outcomes = race(publish, folders)
    (winner,) = [o for o in outcomes if isinstance(o, dict)]
    (loser,) = [o for o in outcomes if not isinstance(o, dict)]
    assert isinstance(loser, storage.StorageConflict) and "already exists" in str(loser)
    assert registry.versions(registry_uri, EXPORTED) == [{**winner, "production": False}]
    with storage.local_tree(uri) as local:
        assert (Path(local) / "saved_model" / "1" / "saved_model.pb").read_bytes() == b"same model"
    assert_no_leftovers(registry_uri)


def test_two_gates_racing_for_production(registry_uri, monkeypatch):
    """Both compared against "no production model" and both read LATEST before either
    writes: exactly one becomes production (a lock file locally, the generation
    precondition on GCS)."""
    Interleaving(monkeypatch, "_check_current")

    def promote(version):
        registry.promote(registry_uri, EXPORTED, version, replaces=None)
        return version

    outcomes = race(promote, ["20260101T000000Z-aaaa", "20260101T000000Z-bbbb"])
    (winner,) = [o for o in outcomes if isinstance(o, str)]
    (loser,) = [o for o in outcomes if not isinstance(o, str)]
    assert isinstance(loser, PromotionConflict) and "is not production" in str(loser)
    assert registry.production_version(registry_uri, EXPORTED) == winner


def test_two_exports_racing_for_the_registry(
    trained, split_dir, evaluated, strict_bucket, monkeypatch
):
    """Two whole exports of pipelines whose gates both compared against "no production
    model", on GCS: both versions are stored, complete and verified; one is production;
    the other export fails and says so."""
    registry_uri = f"gs://{strict_bucket.name}/registry"
    names = iter(["20260101T000000Z-aaaa", "20260101T000000Z-bbbb"])
    lock = threading.Lock()

    def next_name(folder):
        with lock:
            return next(names)

    monkeypatch.setattr(export_module, "new_version", next_name)
    both_promote = threading.Barrier(2)
    promote = export_module.promote

    def promote_together(*args, **kwargs):
        both_promote.wait(timeout=120)
        return promote(*args, **kwargs)

    monkeypatch.setattr(export_module, "promote", promote_together)
    job = lambda _: run_export(trained, split_dir, evaluated, registry_uri)  # noqa: E731
    outcomes = race(job, [0, 1])
    (winner,) = [o for o in outcomes if isinstance(o, dict)]
    (loser,) = [o for o in outcomes if not isinstance(o, dict)]
    assert isinstance(loser, PromotionConflict) and "is not production" in str(loser)
    assert published(registry_uri) == ["20260101T000000Z-aaaa", "20260101T000000Z-bbbb"]
    assert registry.production_version(registry_uri, EXPORTED) == winner["version"]
    for version in registry.versions(registry_uri, EXPORTED):
        assert_servable(version, split_dir, evaluated)
    assert_no_leftovers(registry_uri)


def test_a_writer_landing_between_check_and_write_loses_to_the_precondition(
    strict_bucket, monkeypatch
):
    """The check passes, then another writer creates the object; GCS refuses our write."""
    uri = f"gs://{strict_bucket.name}/registry/{EXPORTED}/LATEST"
    check = storage._check_current

    def someone_else_writes_first(*args):
        check(*args)
        strict_bucket.blob(f"registry/{EXPORTED}/LATEST").upload_from_string("theirs\n")

    monkeypatch.setattr(storage, "_check_current", someone_else_writes_first)
    with pytest.raises(storage.StorageConflict, match="changed by another writer meanwhile"):
        storage.replace_text(uri, "ours\n", expected=None)
    assert storage.read_text(uri) == "theirs\n"


def assert_servable(metadata: dict, split_dir, evaluated) -> None:
    with storage.local_tree(metadata["uri"]) as local:
        assert verify(local, str(split_dir), evaluated["predictions_path"], 256)["images"] == 9


def assert_no_leftovers(registry_uri: str) -> None:
    """No staging files on GCS and no hidden staging folders locally."""
    if storage.is_gcs(registry_uri):
        bucket, prefix = storage.split_gcs(registry_uri)
        from google.cloud import storage as gcs

        names = [b.name for b in gcs.Client().list_blobs(bucket, prefix=prefix)]
        assert not [n for n in names if f"/{storage.STAGING}/" in n]
    else:
        hidden = [p.name for p in Path(registry_uri, EXPORTED).iterdir() if p.name.startswith(".")]
        assert hidden in ([], [".LATEST.lock"])


CRASH = """
import json, os, sys
from google.cloud.storage import Blob
from shapes_pipeline.helpers import storage
from shapes_pipeline.steps import export

args = json.loads(sys.argv[1])
where = args.pop("crash")
if where == "gcs-marker":  # every file copied into place, the marker not yet written
    upload = Blob.upload_from_filename
    def crash(self, *a, **k):
        if self.name.endswith("/metadata.json"):
            os._exit(9)
        return upload(self, *a, **k)
    Blob.upload_from_filename = crash
elif where == "local-rename":  # the staged folder complete, not yet renamed into place
    storage.os.rename = lambda *a: os._exit(9)
export.export(*args.pop("paths"), **args)
"""


@pytest.mark.parametrize("crash", ["gcs-marker", "local-rename"])
def test_a_crash_midway_leaves_the_registry_as_it_was(
    crash, trained, split_dir, evaluated, tmp_path, request
):
    if crash.startswith("gcs"):
        bucket = request.getfixturevalue("strict_bucket")
        root = f"gs://{bucket.name}/registry"
    else:
        root = str(tmp_path / "registry")
    args = {
        "crash": crash,
        "paths": [
            str(trained),
            str(split_dir),
            evaluated["evaluation_path"],
            evaluated["predictions_path"],
        ],
        "registry": root,
        "model_name": EXPORTED,
    }
    done = subprocess.run(
        [sys.executable, "-c", CRASH, json.dumps(args)],
        cwd=Path(__file__).resolve().parents[1],
        env=os.environ,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 9, done.stderr
    assert published(root) == []
    # Only a crash before the marker leaves a folder under the version's name, and without
    # metadata.json it is no version: not listed, not resolvable, never production.
    left = storage.list_folders(storage.join(root, EXPORTED))
    assert len(left) == (1 if crash == "gcs-marker" else 0)
    with pytest.raises(InputError, match="no shapes/LATEST"):
        registry.resolve(root, EXPORTED)
    if crash != "gcs-marker":
        return
    # What that crash left under a version's name is not in the next export's way.
    facts = run_export(trained, split_dir, evaluated, root)
    assert published(root) == [facts["version"]]
    assert registry.production_version(root, EXPORTED) == facts["version"]


def test_staging_left_by_a_killed_export_is_removed_once_an_hour_old(
    trained, split_dir, evaluated, tmp_path
):
    folder = tmp_path / "registry" / EXPORTED
    old, fresh = (
        folder / ".20250101T000000Z-dead.abcd1234",
        folder / ".20250101T000000Z-beef.x1y2z3w4",
    )
    for staging in (old, fresh):
        (staging / "saved_model").mkdir(parents=True)
    os.utime(old, (time.time() - 3700, time.time() - 3700))
    run_export(trained, split_dir, evaluated, str(tmp_path / "registry"))
    assert not old.exists() and fresh.exists()
    assert ".20250101T000000Z-beef.x1y2z3w4" not in str(
        registry.versions(str(tmp_path / "registry"), EXPORTED)
    )


def test_stale_staging_on_gcs(strict_bucket):
    strict_bucket.blob(f"registry/{EXPORTED}/.staging/v-123/saved_model.pb").upload_from_string(
        b"x"
    )
    folder = f"gs://{strict_bucket.name}/registry/{EXPORTED}"
    assert storage.remove_stale_staging(folder) == []  # seconds old: may be a running export
    (removed,) = storage.remove_stale_staging(folder, older_than_s=0)
    assert removed.endswith("/.staging/v-123/saved_model.pb")
    assert not list(strict_bucket.list_blobs(prefix=f"registry/{EXPORTED}/.staging/"))
