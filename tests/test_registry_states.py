"""The registry as a state machine: any sequence of exports (whole, crashed at each point
of the publishing sequence, or refused for a stale gate), promotions (of published
versions, of missing or unpublished ones, by compare-and-swap with a wrong ``replaces``)
and staging folders left by killed exports keeps it consistent. After every step:
``LATEST`` is absent or names a complete published version whose files hash to its
metadata's ``content_sha256``; no published version's bytes ever change; ``versions()``
lists exactly the published ones; nothing hidden is left but what a killed export left.

The real ``export()`` runs (its ``verify="hash"`` path needs no TensorFlow) on a fake
model folder: the registry's code never reads the SavedModel, it copies and hashes it.
"""

import json
import os
import shutil
import tempfile
import time
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import tree_bytes
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from shapes_pipeline.helpers import artifact, registry, storage
from shapes_pipeline.helpers.registry import PromotionConflict
from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.steps import export as export_module

MODEL = "shapes"
CLASSES = ["circles", "squares", "triangles"]


class Crash(Exception):
    """A fault injected into the publishing sequence (the node going away)."""


@contextmanager
def patched(target, name: str, value):
    before = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, before)


def failing(*args, **kwargs):
    raise Crash("injected")


def copy_then_fail(after_files: int):
    """``shutil`` as storage sees it, which copies ``after_files`` files into the staging
    folder and then fails: a crash in the middle of the tree."""
    copied = []

    def copyfile(src, dst, **kwargs):
        if len(copied) >= after_files:
            raise OSError(5, "Input/output error (injected)", src)
        copied.append(src)
        return shutil.copyfile(src, dst, **kwargs)

    return types.SimpleNamespace(copyfile=copyfile, rmtree=shutil.rmtree)


# Each point of export's publishing sequence, in order: what fails there. Faults before
# the folder is renamed into place leave no version; after it, one not in production.
FAULTS = {
    "reading LATEST": lambda: patched(storage, "read_text", failing),
    "removing stale staging": lambda: patched(storage, "remove_stale_staging", failing),
    "listing versions": lambda: patched(storage, "list_folders", failing),
    "checking the name is free": lambda: patched(storage, "_taken", failing),
    "copying, first file": lambda: patched(storage, "shutil", copy_then_fail(0)),
    "copying, mid-tree": lambda: patched(storage, "shutil", copy_then_fail(2)),
    "making it readable": lambda: patched(storage, "_readable_by_all", failing),
    "renaming into place": lambda: patched(os, "rename", failing),
    "promoting": lambda: patched(export_module, "promote", failing),
    "writing LATEST": lambda: patched(os, "replace", failing),
}
PUBLISHED_BEFORE = {"promoting", "writing LATEST"}
# Met only by a model not yet published (one already is gets promoted, not copied).
PUBLISHING = {
    "checking the name is free",
    "copying, first file",
    "copying, mid-tree",
    "making it readable",
    "renaming into place",
}

contents = st.tuples(st.binary(min_size=1, max_size=40), st.binary(max_size=40))


class RegistryStates(RuleBasedStateMachine):
    """The model: every published version's files (bytes, as first published), the
    production version, and the staging folders a killed export left (their age)."""

    def __init__(self):
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="registry-states-"))
        self.root = str(self.tmp / "registry")
        self.trees: dict[str, dict] = {}  # version -> tree_bytes of its folder
        self.by_content: dict[tuple, str] = {}  # (pb, variables) -> version
        self.latest: str | None = None
        self.staging: dict[str, bool] = {}  # hidden folder -> old (over an hour)
        self.models = 0
        self.dataset = self.tmp / "dataset"
        self.dataset.mkdir()
        (self.dataset / "manifest.csv").write_text("path,label,split\n")
        (self.tmp / "predictions.csv").write_text("unused by verify=hash\n")

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def folder(self) -> Path:
        return Path(self.root, MODEL)

    # ------------------------------------------------------------------ the exports

    def model_and_evaluation(self, content: tuple, champion: str | None) -> tuple[str, str]:
        """A trained model's folder (what export reads of one) and its evaluation."""
        self.models += 1
        model = self.tmp / f"model-{self.models}"
        (model / "saved_model" / "1" / "variables").mkdir(parents=True)
        (model / "saved_model" / "1" / "saved_model.pb").write_bytes(content[0])
        (model / "saved_model" / "1" / "variables" / "variables.data").write_bytes(content[1])
        (model / "saved_model" / "1" / "variables" / "variables.index").write_bytes(b"index")
        artifact.write_labels(model, CLASSES)
        evaluation = {
            "gate": {"passed": True, "reason": "first model", "champion_version": champion},
            "model_sha256": artifact.served_files_sha256(model),
            "training": {"backbone": "fake", "weights": "none", "image_size": 32},
            "classes": CLASSES,
            "test_accuracy": 1.0,
            "accuracy_ci95": [0.9, 1.0],
            "classification_report": {"macro avg": {"f1-score": 1.0}},
        }
        path = self.tmp / f"evaluation-{self.models}.json"
        path.write_text(json.dumps(evaluation))
        return str(model), str(path)

    def export(self, content: tuple, champion: str | None) -> dict:
        model, evaluation = self.model_and_evaluation(content, champion)
        return export_module.export(
            model, str(self.dataset), evaluation, str(self.tmp / "predictions.csv"),
            registry=self.root, model_name=MODEL, verify="hash",
        )  # fmt: skip

    def record(self, version: str, content: tuple) -> None:
        self.trees[version] = tree_bytes(self.folder / version)
        self.by_content[content] = version

    def stale_staging_removed(self) -> None:
        """Every export that got past its first checks removes the old staging folders."""
        self.staging = {name: old for name, old in self.staging.items() if not old}

    @initialize(existing=st.booleans())
    def start(self, existing):
        """An empty registry, or one holding a production version already."""
        if existing:
            self.publish(content=(b"the first model", b""))

    @rule(content=contents)
    def publish(self, content):
        """A passing gate's export: a new version (or, for files already published, that
        version) becomes production."""
        published = self.export(content, champion=self.latest)
        version = published["version"]
        if content in self.by_content:
            assert version == self.by_content[content], "the same files stored twice"
        else:
            assert version not in self.trees
            self.record(version, content)
        self.latest = version
        self.stale_staging_removed()

    @precondition(lambda self: self.by_content)
    @rule(data=st.data())
    def publish_again(self, data):
        """A rerun of an export whose model is already published: no second copy."""
        content = data.draw(st.sampled_from(sorted(self.by_content)))
        self.publish(content)

    @rule(content=contents, stale=st.sampled_from(["20200101T000000Z-00000000", None]))
    def export_after_production_moved(self, content, stale):
        """The gate compared against a model that is no longer production: refused
        before anything is written."""
        if stale == self.latest:
            stale = None if self.latest else "20200101T000000Z-00000000"
        with pytest.raises(PromotionConflict, match="nothing published"):
            self.export(content, champion=stale)

    @rule(content=contents, fault=st.sampled_from(sorted(FAULTS)))
    def crashed_export(self, content, fault):
        """The export fails at one point of its sequence: LATEST is not moved, and the
        version exists (whole, not production) only if the crash came after it was in
        place."""
        if content in self.by_content and fault in PUBLISHING:
            self.publish(content)  # found by its hash: nothing to publish, the fault not met
            return
        before = set(self.trees)
        with FAULTS[fault](), pytest.raises((Crash, OSError, InputError)) as failed:
            self.export(content, champion=self.latest)
        if fault.startswith("copying"):  # not mistaken for another writer's version
            assert not isinstance(failed.value, storage.StorageConflict), failed.value
        now = {v["version"] for v in registry.versions(self.root, MODEL)}
        new = now - before
        if fault in PUBLISHED_BEFORE and content not in self.by_content:
            (version,) = new
            self.record(version, content)
        else:
            assert not new, f"a crash at {fault!r} left version(s) {new}"
        if fault not in ("reading LATEST", "removing stale staging"):
            self.stale_staging_removed()

    # ---------------------------------------------------------------- the promotions

    @precondition(lambda self: self.trees)
    @rule(data=st.data())
    def promote_a_published_version(self, data):
        """A rollback (or roll forward) to any published version."""
        version = data.draw(st.sampled_from(sorted(self.trees)))
        before = registry.promote_to(self.root, MODEL, version)
        assert before == (f"{self.latest}\n" if self.latest else None)
        self.latest = version

    @rule(
        name=st.sampled_from(["20990101T000000Z-deadbeef", "20990102T000000Z-cafef00d"]),
        folder=st.booleans(),
    )
    def promote_an_unpublished_version(self, name, folder):
        """A version that does not exist, or a folder without metadata.json (what a crash
        on GCS before the marker leaves): refused, LATEST unchanged."""
        if folder:
            (self.folder / name / "saved_model").mkdir(parents=True, exist_ok=True)
        with pytest.raises(InputError, match=f"no published version {name}"):
            registry.promote_to(self.root, MODEL, name)

    @precondition(lambda self: self.trees)
    @rule(data=st.data())
    def compare_and_swap_with_a_wrong_replaces(self, data):
        """A gate that compared against another production model loses."""
        version = data.draw(st.sampled_from(sorted(self.trees)))
        others = [v for v in [None, *sorted(self.trees)] if v != self.latest]
        wrong = data.draw(st.sampled_from(others))
        with pytest.raises(PromotionConflict, match="is not production"):
            registry.promote(self.root, MODEL, version, replaces=wrong)

    @precondition(lambda self: self.trees)
    @rule(data=st.data())
    def compare_and_swap_with_the_right_replaces(self, data):
        version = data.draw(st.sampled_from(sorted(self.trees)))
        registry.promote(self.root, MODEL, version, replaces=self.latest)
        self.latest = version

    @rule(old=st.booleans(), files=st.integers(0, 2))
    def a_killed_export_left_staging(self, old, files):
        """What publish_tree's staging folder looks like after a kill -9 mid-copy."""
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.folder, prefix=".20250101T000000Z-dead."))
        for i in range(files):
            (staging / f"part-{i}").write_bytes(b"half")
        if old:
            os.utime(staging, (time.time() - 7200, time.time() - 7200))
        self.staging[staging.name] = old

    # ---------------------------------------------------------------- the invariants

    @invariant()
    def latest_names_a_complete_published_version(self):
        assert registry.production_version(self.root, MODEL) == self.latest
        if self.latest is None:
            return
        folder = self.folder / self.latest
        found = registry.metadata(self.root, MODEL, self.latest)
        assert found is not None and found["version"] == self.latest
        assert found["content_sha256"] == artifact.served_files_sha256(folder)
        assert (folder / "saved_model" / "1" / "saved_model.pb").is_file()
        assert registry.resolve(self.root, MODEL) == str(folder)

    @invariant()
    def published_versions_never_change(self):
        for version, files in self.trees.items():
            assert tree_bytes(self.folder / version) == files, f"{version} changed"

    @invariant()
    def the_listing_is_the_model(self):
        listed = registry.versions(self.root, MODEL)
        assert [(v["version"], v["production"]) for v in listed] == [
            (v, v == self.latest) for v in sorted(self.trees)
        ]
        for entry in listed:
            assert entry["uri"] == str(self.folder / entry["version"])

    @invariant()
    def only_killed_exports_leave_hidden_folders(self):
        hidden = {
            p.name
            for p in (self.folder.iterdir() if self.folder.is_dir() else [])
            if p.name.startswith(".") and p.is_dir()
        }
        assert hidden == set(self.staging)


# Each step exports or promotes for real: a third of the profile's examples (ci: 20).
RegistryStates.TestCase.settings = settings(
    max_examples=max(1, settings.default.max_examples // 3), stateful_step_count=15
)
test_the_registry_stays_consistent_through_any_sequence = RegistryStates.TestCase


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("existing", [False, True], ids=["empty", "in-production"])
def test_a_crash_at_each_point_of_publishing_then_a_rerun(fault, existing):
    """Every fault point, every run (the state machine may not draw each one): a crash,
    then the same export again, which publishes the model once and makes it production."""
    machine = RegistryStates()
    checks = [
        machine.latest_names_a_complete_published_version,
        machine.published_versions_never_change,
        machine.the_listing_is_the_model,
        machine.only_killed_exports_leave_hidden_folders,
    ]
    try:
        machine.start(existing)
        machine.a_killed_export_left_staging(old=True, files=1)
        machine.a_killed_export_left_staging(old=False, files=2)
        for step in (lambda: machine.crashed_export((b"new", b"model"), fault),
                     lambda: machine.publish((b"new", b"model"))):  # fmt: skip
            step()
            for check in checks:
                check()
        assert machine.latest == machine.by_content[(b"new", b"model")]
    finally:
        machine.teardown()
