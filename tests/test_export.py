"""Export: verified before publishing, published in one step, never overwriting, and
promoted only over the model the gate compared against; on local folders and on GCS.

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

import numpy as np
import pytest
from helpers import Interleaving, race, save_oracle

from components import artifact, registry, serving, storage
from components import export as export_module
from components.export import export
from components.predictions import read as read_predictions
from components.registry import PromotionConflict
from components.step import InputError
from components.verify import VerificationError, verify

pytestmark = pytest.mark.slow  # trains, exports or starts a browser

NAME = "shapes"


def run_export(
    trained, split_dir, evaluated, registry_uri: str, model_dir=None, verify="hash"
) -> dict:
    return export(
        str(model_dir or trained),
        str(split_dir),
        evaluated["evaluation_path"],
        evaluated["predictions_path"],
        registry=registry_uri,
        model_name=NAME,
        pipeline_run={"id": "run-1", "name": "shapes-run-1"},
        verify=verify,
    )


@pytest.fixture(params=["local", "gcs"])
def registry_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "registry")
    bucket = request.getfixturevalue("strict_bucket")
    return f"gs://{bucket.name}/registry"


def published(registry_uri: str) -> list[str]:
    return [v["version"] for v in registry.versions(registry_uri, NAME)]


def test_export_publishes_a_verified_servable_version(trained, split_dir, evaluated, tmp_path):
    root = tmp_path / "registry"
    facts = run_export(trained, split_dir, evaluated, str(root))
    version = root / NAME / facts["version"]
    assert (version / "saved_model" / "1" / "saved_model.pb").is_file()
    assert (version / "labels.txt").read_text().split() == ["circles", "squares", "triangles"]
    assert json.loads((version / "metadata.json").read_text()) == facts
    assert facts["serving_uri"] == str(version / "saved_model")
    assert facts["verification"] == {"method": "hash", "content_sha256": facts["content_sha256"]}
    assert (
        facts["content_sha256"]
        == json.loads(Path(evaluated["evaluation_path"]).read_text())["model_sha256"]
    )
    assert facts["pipeline_run"] == {"id": "run-1", "name": "shapes-run-1"}
    assert facts["packages"]["training"]["tensorflow"]
    assert facts["packages"]["export"]["kfp"]
    assert registry.production_version(str(root), NAME) == facts["version"]
    names = sorted(p.name for p in (root / NAME).iterdir())
    assert names == sorted([facts["version"], "LATEST", ".LATEST.lock"])


def test_verify_holds_the_model_to_the_evaluation_within_1e_4(
    trained, split_dir, evaluated, tmp_path
):
    classes, rows = read_predictions(evaluated["predictions_path"])
    assert verify(str(trained), str(split_dir), evaluated["predictions_path"], 256)["images"] == 9

    def shifted(by: float) -> str:
        path = tmp_path / f"shifted-{by}.csv"
        text = Path(evaluated["predictions_path"]).read_text().splitlines()
        first = text[1].split(",")
        first[3] = f"{float(first[3]) + by:.6f}"
        path.write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
        return str(path)

    assert verify(str(trained), str(split_dir), shifted(5e-5), 256)["max_difference"] < 1e-4
    first_image = Path(evaluated["predictions_path"]).read_text().splitlines()[1].split(",")[0]
    with pytest.raises(VerificationError, match=f"{first_image}: probabilities differ .* by 2"):
        verify(str(trained), str(split_dir), shifted(2e-4), 256)
    assert classes == ["circles", "squares", "triangles"] and len(rows) == 9


def test_a_model_other_than_the_evaluated_one_is_not_published(
    trained, split_dir, evaluated, tmp_path
):
    other = tmp_path / "other-model"
    rng = np.random.default_rng(0)
    save_oracle(other, rng.normal(size=(3, 3)), np.zeros(3), ["circles", "squares", "triangles"])
    root = tmp_path / "registry"
    with pytest.raises(VerificationError, match="are not the files evaluate scored"):
        run_export(trained, split_dir, evaluated, str(root), model_dir=other)
    assert published(str(root)) == []
    assert registry.production_version(str(root), NAME) is None


def test_a_model_that_does_not_reproduce_the_evaluation_is_not_published(
    trained, split_dir, evaluated, tmp_path
):
    """The evaluated files, but predictions.csv 2e-4 off on one image: the fresh process's
    verification refuses."""
    text = Path(evaluated["predictions_path"]).read_text().splitlines()
    first = text[1].split(",")
    first[3] = f"{float(first[3]) + 2e-4:.6f}"
    off = tmp_path / "off.csv"
    off.write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    root = tmp_path / "registry"
    with pytest.raises(VerificationError, match="verification of the model to publish failed"):
        export(
            str(trained), str(split_dir), evaluated["evaluation_path"], str(off),
            registry=str(root), model_name=NAME, verify="reload",
        )  # fmt: skip
    assert published(str(root)) == []


def test_verification_compares_each_image_with_its_own_row(trained, split_dir, evaluated, tmp_path):
    """Two images of one class, their rows swapped: the (correct) model no longer matches."""
    lines = Path(evaluated["predictions_path"]).read_text().splitlines()
    header, rows = lines[0], [line.split(",") for line in lines[1:]]
    first, second = [i for i, r in enumerate(rows) if r[1] == rows[0][1]][:2]
    rows[first][3:], rows[second][3:] = rows[second][3:], rows[first][3:]
    swapped = tmp_path / "swapped.csv"
    swapped.write_text("\n".join([header, *map(",".join, rows)]) + "\n")
    with pytest.raises(VerificationError, match=rows[first][0] + ": "):
        verify(str(trained), str(split_dir), str(swapped), 256)


def test_verification_runs_on_the_files_in_a_fresh_process(
    trained, split_dir, evaluated, tmp_path, monkeypatch
):
    """Nothing loaded in the exporting process can stand in for the files: here its model
    loader is broken, and export still verifies (and publishes) the model."""

    def broken(*args, **kwargs):
        raise AssertionError("the exporting process loaded the model itself")

    monkeypatch.setattr(serving, "load", broken)
    facts = run_export(trained, split_dir, evaluated, str(tmp_path / "registry"), verify="reload")
    assert facts["verification"]["method"] == "reload"
    assert facts["verification"]["images"] == 9
    assert facts["verification"]["max_difference"] <= 1e-4


def test_by_default_export_proves_the_files_by_hash_and_starts_no_tensorflow(
    trained, split_dir, evaluated, tmp_path, monkeypatch
):
    """verify_export=hash: the evaluated files' hash is the proof; no second TensorFlow
    process reloads them (here that process cannot start)."""

    def no_reload(*args, **kwargs):
        raise AssertionError("export started a verification process")

    monkeypatch.setattr(export_module, "verify_in_fresh_process", no_reload)
    facts = run_export(trained, split_dir, evaluated, str(tmp_path / "registry"))
    assert facts["verification"]["method"] == "hash"
    with pytest.raises(AssertionError, match="verification process"):
        run_export(trained, split_dir, evaluated, str(tmp_path / "other"), verify="reload")


def test_verification_checks_the_staged_copy_not_the_original(
    trained, split_dir, evaluated, tmp_path, monkeypatch
):
    """One byte of the copy about to be published changed after copying: its content hash
    is not the evaluated files', so nothing is published, although the original is fine."""
    write_labels = artifact.write_labels

    def copy_then_damage(folder, classes):  # export writes labels.txt into its copy
        write_labels(folder, classes)
        variables = next(Path(folder, "saved_model").rglob("variables.data-*"))
        data = bytearray(variables.read_bytes())
        data[len(data) // 2] ^= 1
        variables.write_bytes(bytes(data))

    monkeypatch.setattr(artifact, "write_labels", copy_then_damage)
    root = tmp_path / "registry"
    with pytest.raises(VerificationError, match="are not the files evaluate scored"):
        run_export(trained, split_dir, evaluated, str(root))
    assert published(str(root)) == []


def test_export_refuses_a_failed_gate_and_a_moved_production(
    trained, split_dir, evaluated, tmp_path
):
    failed = json.loads(Path(evaluated["evaluation_path"]).read_text())
    failed["gate"] = {**failed["gate"], "passed": False, "reason": "test accuracy too low"}
    (tmp_path / "failed.json").write_text(json.dumps(failed))
    root = str(tmp_path / "registry")
    with pytest.raises(InputError, match="the gate did not pass .test accuracy too low"):
        export(
            str(trained),
            str(split_dir),
            str(tmp_path / "failed.json"),
            evaluated["predictions_path"],
            registry=root,
            model_name=NAME,
        )
    first = run_export(trained, split_dir, evaluated, root)
    # The gate compared against "no production model", but there is one now:
    with pytest.raises(PromotionConflict, match="production is no longer empty"):
        run_export(trained, split_dir, evaluated, root)
    assert published(root) == [first["version"]]


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
    (stored,) = registry.versions(root, NAME)
    assert not stored["production"]
    monkeypatch.setattr(export_module, "promote", promote)
    again = run_export(trained, split_dir, evaluated, root)
    assert again == {k: v for k, v in stored.items() if k != "production"}
    assert published(root) == [stored["version"]]
    assert registry.production_version(root, NAME) == stored["version"]


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
    uri = storage.join(registry_uri, NAME, "20260101T000000Z-same")
    Interleaving(monkeypatch, "_taken")

    def publish(folder):
        storage.publish_tree(str(folder), uri, marker="metadata.json")
        return json.loads((folder / "metadata.json").read_text())

    outcomes = race(publish, folders)
    (winner,) = [o for o in outcomes if isinstance(o, dict)]
    (loser,) = [o for o in outcomes if not isinstance(o, dict)]
    assert isinstance(loser, storage.StorageConflict) and "already exists" in str(loser)
    assert registry.versions(registry_uri, NAME) == [{**winner, "production": False}]
    with storage.local_tree(uri) as local:
        assert (Path(local) / "saved_model" / "1" / "saved_model.pb").read_bytes() == b"same model"
    assert_no_leftovers(registry_uri)


def test_two_gates_racing_for_production(registry_uri, monkeypatch):
    """Both compared against "no production model" and both read LATEST before either
    writes: exactly one becomes production (a lock file locally, the generation
    precondition on GCS)."""
    Interleaving(monkeypatch, "_check_current")

    def promote(version):
        registry.promote(registry_uri, NAME, version, replaces=None)
        return version

    outcomes = race(promote, ["20260101T000000Z-aaaa", "20260101T000000Z-bbbb"])
    (winner,) = [o for o in outcomes if isinstance(o, str)]
    (loser,) = [o for o in outcomes if not isinstance(o, str)]
    assert isinstance(loser, PromotionConflict) and "is not production" in str(loser)
    assert registry.production_version(registry_uri, NAME) == winner


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
    assert registry.production_version(registry_uri, NAME) == winner["version"]
    for version in registry.versions(registry_uri, NAME):
        assert_servable(version, split_dir, evaluated)
    assert_no_leftovers(registry_uri)


def test_a_writer_landing_between_check_and_write_loses_to_the_precondition(
    strict_bucket, monkeypatch
):
    """The check passes, then another writer creates the object; GCS refuses our write."""
    uri = f"gs://{strict_bucket.name}/registry/{NAME}/LATEST"
    check = storage._check_current

    def someone_else_writes_first(*args):
        check(*args)
        strict_bucket.blob(f"registry/{NAME}/LATEST").upload_from_string("theirs\n")

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
        hidden = [p.name for p in Path(registry_uri, NAME).iterdir() if p.name.startswith(".")]
        assert hidden in ([], [".LATEST.lock"])


CRASH = """
import json, os, sys
from google.cloud.storage import Blob
from components import export, storage

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
        "model_name": NAME,
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
    left = storage.list_folders(storage.join(root, NAME))
    assert len(left) == (1 if crash == "gcs-marker" else 0)
    with pytest.raises(InputError, match="no shapes/LATEST"):
        registry.resolve(root, NAME)
    if crash != "gcs-marker":
        return
    # What that crash left under a version's name is not in the next export's way.
    facts = run_export(trained, split_dir, evaluated, root)
    assert published(root) == [facts["version"]]
    assert registry.production_version(root, NAME) == facts["version"]


def test_published_versions_are_readable_by_other_users(trained, split_dir, evaluated, tmp_path):
    """Folders 0755 and files 0644, even from a process whose umask is 077."""
    previous = os.umask(0o077)
    try:
        facts = run_export(trained, split_dir, evaluated, str(tmp_path / "registry"))
    finally:
        os.umask(previous)
    version = Path(facts["uri"])
    modes = {p.stat().st_mode & 0o777 for p in [version, *version.rglob("*")] if p.is_dir()}
    assert modes == {0o755}
    assert {p.stat().st_mode & 0o777 for p in version.rglob("*") if p.is_file()} == {0o644}


def test_staging_left_by_a_killed_export_is_removed_once_an_hour_old(
    trained, split_dir, evaluated, tmp_path
):
    folder = tmp_path / "registry" / NAME
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
        registry.versions(str(tmp_path / "registry"), NAME)
    )


def test_stale_staging_on_gcs(strict_bucket):
    strict_bucket.blob(f"registry/{NAME}/.staging/v-123/saved_model.pb").upload_from_string(b"x")
    folder = f"gs://{strict_bucket.name}/registry/{NAME}"
    assert storage.remove_stale_staging(folder) == []  # seconds old: may be a running export
    (removed,) = storage.remove_stale_staging(folder, older_than_s=0)
    assert removed.endswith("/.staging/v-123/saved_model.pb")
    assert not list(strict_bucket.list_blobs(prefix=f"registry/{NAME}/.staging/"))
