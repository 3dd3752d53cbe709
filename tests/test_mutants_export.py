"""Export, fast: the real ``export()`` on a fake model folder (its ``verify="hash"`` path
never reads the SavedModel, it copies and hashes it). Each test pins what the next step or
a user relies on: the metadata a version is published with, the name it gets, the one-line
refusals (naming the file and the value), nothing published when refused. The verification
process and ``verify`` itself are pinned in test_mutants_verify.py."""

import datetime as dt
import json
import os
import re
import tempfile
import time
from pathlib import Path

import pytest
from export_setup import MODEL, evaluation_of, export_setup, fake_model, run_export
from helpers import tree_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

from shapes_pipeline.helpers import artifact, dataset, registry, step, storage
from shapes_pipeline.helpers.registry import PromotionConflict
from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.steps.export import export, new_version, unused_version
from shapes_pipeline.steps.verify import VerificationError

VERSION = re.compile(r"(\d{8}T\d{6}Z)-([0-9a-f]{8})")


@pytest.fixture
def setup(tmp_path):
    """A fake model, its passing evaluation, a data set folder and a registry folder."""
    return export_setup(tmp_path)


def a_second_version(setup) -> tuple[dict, Path, dict]:
    """The fake model published, then another whose gate compared against it: the first
    version's metadata, the other model's folder and the second version's metadata."""
    first = run_export(setup)
    other = fake_model(setup["tmp"] / "other", b"another model")
    second = run_export(
        setup,
        evaluation_of(other, setup["tmp"] / "e2.json", champion=first["version"]),
        model=other,
    )
    return first, other, second


def utc_seconds() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


# ------------------------------------------------------------------ what is published


@given(
    content=st.binary(min_size=1, max_size=30),
    classes=st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=2, max_size=4,
                     unique=True),
    accuracy=st.floats(0, 1),
    run=st.none() | st.fixed_dictionaries({"id": st.text(max_size=5), "name": st.text(max_size=5)}),
    packages=st.booleans(),
)  # fmt: skip
@settings(max_examples=15)  # a real export each (about 0.1 s)
def test_a_published_version_holds_the_evaluated_files_and_metadata_of_this_run(
    content, classes, accuracy, run, packages
):
    """Whatever the model and evaluation: the version folder holds exactly the served
    files (SavedModel and labels) plus metadata.json, whose every field comes from this
    run (model, evaluation, data set, time, packages); LATEST names it."""
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        model = fake_model(tmp / "model", content, classes)
        changes = {"test_accuracy": accuracy, "accuracy_ci95": [accuracy / 2, accuracy]}
        evaluation = json.loads(
            Path(evaluation_of(model, tmp / "e.json", classes=classes, **changes)).read_text()
        )
        if not packages:
            del evaluation["training"]["packages"]
        (tmp / "e.json").write_text(json.dumps(evaluation))
        (tmp / "data").mkdir()
        (tmp / "data" / dataset.MANIFEST).write_text(f"path,label,split\n{content.hex()},a,test\n")
        root = tmp / "registry"
        before = utc_seconds()
        published = export(
            str(model), str(tmp / "data"), str(tmp / "e.json"), str(tmp / "p.csv"),
            registry=str(root), model_name=MODEL, pipeline_run=run,
        )  # fmt: skip
        after = dt.datetime.now(dt.UTC)
        content_sha = evaluation["model_sha256"]
        stamp, suffix = VERSION.fullmatch(published["version"]).groups()
        made = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        assert before <= made <= after and suffix == content_sha[:8]
        created = dt.datetime.fromisoformat(published["created"])
        assert created.utcoffset() == dt.timedelta(0) and created.microsecond == 0
        assert before <= created <= after
        assert published["created"] == created.isoformat(timespec="seconds")
        uri = str(root / MODEL / published["version"])
        assert published == {
            "model_name": MODEL,
            "version": published["version"],
            "uri": uri,
            "content_sha256": content_sha,
            "serving_uri": str(Path(uri, "saved_model")),
            "created": published["created"],
            "backbone": "MobileNet",
            "weights": "imagenet",
            "image_size": 48,
            "classes": classes,
            "metrics": {
                "test_accuracy": accuracy,
                "accuracy_ci95": [accuracy / 2, accuracy],
                "macro_f1": 0.7,
            },
            "manifest_sha256": dataset.sha256_of(tmp / "data" / dataset.MANIFEST),
            "gate": evaluation["gate"],
            "verification": {"method": "hash", "content_sha256": content_sha},
            "pipeline_run": run,
            "packages": {
                "training": {"tensorflow": "2.x"} if packages else None,
                "export": step.package_versions("kfp", "google-cloud-storage", "shapes-pipeline"),
            },
        }
        files = tree_bytes(Path(uri))
        written = files.pop("metadata.json").decode()
        assert json.loads(written) == published
        # for people reading it too: one field a line, indented
        assert f'\n  "model_name": {json.dumps(MODEL)},\n' in written
        assert files == {
            k: v for k, v in tree_bytes(model).items() if k.split("/")[0] != "training.json"
        }
        assert artifact.served_files_sha256(uri) == content_sha
        assert registry.production_version(str(root), MODEL) == published["version"]
        assert (root / MODEL / "LATEST").read_text() == f"{published['version']}\n"


def test_export_laps_its_imports_as_a_known_phase(setup):
    """The step's phase timings (``phase_seconds``) only know PHASES: export's first lap,
    the libraries' import, must be recorded under ``import``, not a name nobody reports."""
    step._laps.clear()
    run_export(setup)
    assert "import" in step._laps and set(step._laps) <= set(step.PHASES)


def test_a_rerun_of_published_files_promotes_that_version_and_stores_nothing(setup, capsys):
    """After a failure past publishing (here: production moved back by hand), the same
    files again: the version already holding them becomes production, with its metadata
    returned as published; no second folder, a line saying so."""
    first, other, second = a_second_version(setup)
    registry.promote_to(str(setup["registry"]), MODEL, first["version"])  # a rollback
    folders = tree_bytes(setup["registry"] / MODEL)
    capsys.readouterr()
    again = run_export(
        setup,
        evaluation_of(other, setup["tmp"] / "e3.json", champion=first["version"]),
        model=other,
    )
    assert again == second
    assert registry.production_version(str(setup["registry"]), MODEL) == second["version"]
    assert capsys.readouterr().out == (
        f"version {second['version']} already holds this model; not published again\n"
    )
    del folders["LATEST"]
    after = tree_bytes(setup["registry"] / MODEL)
    del after["LATEST"]
    assert after == folders


def test_a_rerun_whose_champion_is_no_longer_production_promotes_nothing(setup):
    """Found by its hash, the stored version still moves LATEST only by compare-and-swap
    against the gate's champion."""
    first, other, second = a_second_version(setup)
    # The gate compared against `first`, production is `second` and the files are stored:
    stale = evaluation_of(other, setup["tmp"] / "e3.json", champion=first["version"])
    with pytest.raises(PromotionConflict, match=f"production is no longer {first['version']}"):
        run_export(setup, stale, model=other)
    assert registry.production_version(str(setup["registry"]), MODEL) == second["version"]


# ------------------------------------------------------------------------- refusals


def test_a_failed_gate_publishes_nothing_and_says_why(setup):
    evaluation = json.loads(Path(setup["evaluation"]).read_text())
    evaluation["gate"].update(passed=False, reason="accuracy 0.5 < 0.9")
    Path(setup["evaluation"]).write_text(json.dumps(evaluation))
    with pytest.raises(InputError) as refused:
        run_export(setup)
    assert str(refused.value) == (
        f"{setup['evaluation']}: the gate did not pass (accuracy 0.5 < 0.9)"
    )
    assert not setup["registry"].exists()


@pytest.mark.parametrize("production", [None, "20260101T000000Z-0123abcd"])
def test_a_gate_that_compared_against_another_production_model_publishes_nothing(setup, production):
    """The gate's champion (none, or a version) is not production now: refused, naming
    the champion it compared against, before anything is written."""
    champion = "20250101T000000Z-feedbeef" if production is None else None
    if production:
        registry.promote(str(setup["registry"]), MODEL, production, replaces=None)
    evaluation = evaluation_of(setup["model"], setup["tmp"] / "evaluation.json", champion=champion)
    before = tree_bytes(setup["tmp"])
    with pytest.raises(PromotionConflict) as refused:
        run_export(setup, evaluation)
    assert str(refused.value) == (
        f"{MODEL}: production is no longer {champion or 'empty'}, which the gate compared "
        "against; nothing published"
    )
    assert tree_bytes(setup["tmp"]) == before


def test_files_other_than_the_evaluated_ones_are_not_published(setup):
    """The model folder changed since evaluate hashed it: refused, naming the folder and
    both hashes (the copy's and the evaluated one's), nothing published."""
    evaluated = json.loads(Path(setup["evaluation"]).read_text())["model_sha256"]
    (setup["model"] / "labels.txt").write_text("circles\nsquares\n")
    copy = artifact.served_files_sha256(setup["model"])
    with pytest.raises(VerificationError) as refused:
        run_export(setup)
    assert str(refused.value) == (
        f"{setup['model']}: the files to publish (sha256 {copy[:12]}) are not the files "
        f"evaluate scored ({evaluated[:12]}); nothing published"
    )
    assert registry.versions(str(setup["registry"]), MODEL) == []
    assert registry.production_version(str(setup["registry"]), MODEL) is None


def test_a_registry_bucket_that_does_not_exist_is_refused_before_reading(setup, bucket):
    """On GCS, a missing bucket is named before the evaluation is even read."""
    Path(setup["evaluation"]).unlink()
    with pytest.raises(storage.StorageError, match=f"{bucket.name}-missing"):
        export(
            str(setup["model"]), str(setup["data"]), setup["evaluation"],
            str(setup["predictions"]), registry=f"gs://{bucket.name}-missing/r", model_name=MODEL,
        )  # fmt: skip


def test_staging_left_by_a_killed_export_is_removed_and_reported(setup, capsys):
    """An hour-old staging folder (what a kill -9 mid-copy leaves) goes, with one line
    naming it; a young one (maybe a publish still running) stays."""
    folder = setup["registry"] / MODEL
    folder.mkdir(parents=True)
    old = Path(tempfile.mkdtemp(dir=folder, prefix=".20250101T000000Z-dead."))
    young = Path(tempfile.mkdtemp(dir=folder, prefix=".20250101T000000Z-beef."))
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    run_export(setup)
    assert capsys.readouterr().out == f"removed {old}, left by an export that did not finish\n"
    assert not old.exists() and young.is_dir()


# ------------------------------------------------------------------- version names


@given(st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
def test_a_new_version_is_the_utc_second_then_the_content_hash(content):
    """Names sort by time (UTC, to the second) and tell two models apart by hash."""
    before = utc_seconds()
    stamp, suffix = VERSION.fullmatch(new_version(content)).groups()
    made = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    assert before <= made <= dt.datetime.now(dt.UTC) and suffix == content[:8]


def test_names_and_times_are_utc_whatever_the_local_time_zone(setup, monkeypatch):
    """A machine set to another zone (here UTC+5:45, never a whole hour off) names its
    versions and dates them in UTC all the same, so names from anywhere sort by time."""
    monkeypatch.setenv("TZ", "Asia/Kathmandu")
    time.tzset()
    try:
        before = utc_seconds()
        published = run_export(setup)
        after = dt.datetime.now(dt.UTC)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    stamp, _ = VERSION.fullmatch(published["version"]).groups()
    made = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    assert before <= made <= after
    assert before <= dt.datetime.fromisoformat(published["created"]) <= after


def test_an_unused_version_waits_past_a_name_a_crashed_export_left(tmp_path):
    """A folder (no metadata) holding this second's name for these files: the name given
    is a later second's, never the taken one."""
    content = "ab" * 32
    taken = new_version(content)
    (tmp_path / MODEL / taken).mkdir(parents=True)
    name = unused_version(str(tmp_path), MODEL, content)
    assert name != taken and name > taken and name.endswith(f"-{content[:8]}")
    assert unused_version(str(tmp_path), "empty", content).endswith(f"-{content[:8]}")


def test_a_free_version_name_is_taken_at_once(tmp_path, monkeypatch):
    """Waiting is only for a name already taken: with none taken, no sleep at all."""

    def refuse(seconds):
        raise AssertionError(f"slept {seconds} s with no name taken")

    monkeypatch.setattr(time, "sleep", refuse)
    content = "cd" * 32
    (tmp_path / MODEL / "20200101T000000Z-cdcdcdcd").mkdir(parents=True)
    assert unused_version(str(tmp_path), MODEL, content).endswith(f"-{content[:8]}")


def test_a_clock_that_never_moves_gives_up_naming_the_registry(tmp_path, monkeypatch):
    """Every name taken however long it waits (a stuck clock): a bounded number of tries,
    then one line naming the model's folder, instead of waiting for ever."""
    from shapes_pipeline.steps import export as export_module

    stuck = "20200101T000000Z-efefefef"
    (tmp_path / MODEL / stuck).mkdir(parents=True)
    slept = []
    monkeypatch.setattr(export_module, "new_version", lambda content: stuck)
    monkeypatch.setattr(time, "sleep", slept.append)
    with pytest.raises(storage.StorageError) as refused:
        unused_version(str(tmp_path), MODEL, "ef" * 32)
    assert str(refused.value) == (
        f"{tmp_path / MODEL}: no free version name after {export_module.NAME_TRIES} tries "
        "(is the clock stuck?); run export again"
    )
    assert slept == [0.2] * export_module.NAME_TRIES
