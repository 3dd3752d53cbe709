"""Export and its verification, fast: the real ``export()`` on a fake model folder (its
``verify="hash"`` path never reads the SavedModel, it copies and hashes it), the fresh
verification process as it is started, and ``verify`` on a tiny SavedModel of known
weights. Each test pins what the next step or a user relies on: the metadata a version
is published with, the one-line refusals (naming the file and the value), nothing
published when refused, the protocol with the verification process."""

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import images_by_path, save_oracle, tree_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from components import artifact, dataset, predictions, registry, step, storage
from components.evaluate import stratified_sample
from components.export import export, new_version, unused_version, verify_in_fresh_process
from components.registry import PromotionConflict
from components.split import split_dataset
from components.step import InputError
from components.verify import TOLERANCE, VerificationError, verify

MODEL = "shapes"
CLASSES = ["circles", "squares", "triangles"]
VERSION = re.compile(r"(\d{8}T\d{6}Z)-([0-9a-f]{8})")


def fake_model(folder: Path, content: bytes = b"a model", classes=CLASSES) -> Path:
    """What export reads of a trained model: its SavedModel folder and labels."""
    (folder / "saved_model" / "1" / "variables").mkdir(parents=True)
    (folder / "saved_model" / "1" / "saved_model.pb").write_bytes(content)
    (folder / "saved_model" / "1" / "variables" / "variables.index").write_bytes(b"index")
    (folder / "training.json").write_text("{}")  # not published: not served
    artifact.write_labels(folder, classes)
    return folder


def evaluation_of(model: Path, out: Path, *, champion=None, classes=CLASSES, **changes) -> str:
    """An evaluation of ``model`` whose gate passed against ``champion``; returns its path."""
    evaluation = {
        "gate": {"passed": True, "reason": "better", "champion_version": champion},
        "model_sha256": artifact.served_files_sha256(model),
        "training": {
            "backbone": "MobileNet",
            "weights": "imagenet",
            "image_size": 48,
            "packages": {"tensorflow": "2.x"},
        },
        "classes": classes,
        "test_accuracy": 0.75,
        "accuracy_ci95": [0.5, 0.9],
        "classification_report": {"macro avg": {"f1-score": 0.7}},
        "serving_check": {"images": 7},
        **changes,
    }
    out.write_text(json.dumps(evaluation))
    return str(out)


@pytest.fixture
def setup(tmp_path):
    """A fake model, its passing evaluation (no production model), a data set folder with
    a manifest and a registry folder."""
    model = fake_model(tmp_path / "model")
    data = tmp_path / "dataset"
    data.mkdir()
    (data / dataset.MANIFEST).write_text("path,label,split\n")
    (tmp_path / "predictions.csv").write_text("path,true_class,predicted_class\n")
    return {
        "model": model,
        "evaluation": evaluation_of(model, tmp_path / "evaluation.json"),
        "data": data,
        "predictions": tmp_path / "predictions.csv",
        "registry": tmp_path / "registry",
        "tmp": tmp_path,
    }


def run_export(s: dict, evaluation: str | None = None, model: Path | None = None, **kwargs):
    return export(
        str(model or s["model"]), str(s["data"]), evaluation or s["evaluation"],
        str(s["predictions"]), registry=str(s["registry"]), model_name=MODEL, **kwargs,
    )  # fmt: skip


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
    first = run_export(setup)
    other = fake_model(setup["tmp"] / "other", b"another model")
    second = run_export(
        setup,
        evaluation_of(other, setup["tmp"] / "e2.json", champion=first["version"]),
        model=other,
    )
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
    first = run_export(setup)
    other = fake_model(setup["tmp"] / "other", b"another model")
    second = run_export(
        setup,
        evaluation_of(other, setup["tmp"] / "e2.json", champion=first["version"]),
        model=other,
    )
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


# --------------------------------------------------------- the fresh verification process


def fake_python(tmp_path: Path, body: str) -> str:
    """An interpreter standing in for ``sys.executable``: records its arguments and the
    model folder's files (the folder is gone once export returns), then runs ``body``."""
    script = tmp_path / "python"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {tmp_path}/argv\n'
        f'cd "$3" && find . -type f | sort > {tmp_path}/files; cd - >/dev/null\n'
        f"{body}\n"
    )
    script.chmod(0o755)
    return str(script)


def test_the_verification_process_gets_the_staged_copy_and_its_last_line_is_the_result(
    setup, monkeypatch
):
    """The process is ``python -m components.verify COPY DATA PREDICTIONS SAMPLE``, on the
    staged copy (not the model folder), the sample evaluate checked serving on; the JSON
    on its last stdout line (TensorFlow may print before it) joins the metadata."""
    result = {"images": 7, "max_difference": 1e-06, "tolerance": 0.0001}
    body = f"echo 'some log line'\necho '{json.dumps(result)}'"
    monkeypatch.setattr(sys, "executable", fake_python(setup["tmp"], body))
    published = run_export(setup, verify="reload")
    argv = (setup["tmp"] / "argv").read_text().splitlines()
    assert argv[:2] == ["-m", "components.verify"]
    assert argv[3:] == [str(setup["data"]), str(setup["predictions"]), "7"]
    assert Path(argv[2]) != setup["model"] and not Path(argv[2]).exists()
    files = (setup["tmp"] / "files").read_text().split()
    assert files == [
        "./labels.txt",
        "./saved_model/1/saved_model.pb",
        "./saved_model/1/variables/variables.index",
    ]
    assert published["verification"] == {
        "method": "reload",
        "content_sha256": published["content_sha256"],
        **result,
    }


def test_a_verification_process_that_dies_silently_is_reported_by_exit_status(setup, monkeypatch):
    monkeypatch.setattr(sys, "executable", fake_python(setup["tmp"], "exit 3"))
    with pytest.raises(VerificationError) as refused:
        verify_in_fresh_process(str(setup["model"]), "d", "p", 5)
    assert str(refused.value) == "verification of the model to publish failed: exit status 3"
    body = "echo first >&2\necho '  the reason  ' >&2\necho '{}'\nexit 1"
    monkeypatch.setattr(sys, "executable", fake_python(setup["tmp"], body))
    with pytest.raises(VerificationError) as refused:
        verify_in_fresh_process(str(setup["model"]), "d", "p", 5)
    # the last line of what it wrote, as written (only the whole output's ends trimmed)
    assert str(refused.value) == "verification of the model to publish failed:   the reason"


def test_the_verification_process_quiets_tensorflow(setup, monkeypatch):
    """TensorFlow's C++ info lines would bury the result: the process runs with
    TF_CPP_MIN_LOG_LEVEL=2, and otherwise the caller's environment."""
    monkeypatch.setenv("SHAPES_SEEN", "yes")
    body = 'printf \'{"level": "%s", "seen": "%s"}\\n\' "$TF_CPP_MIN_LOG_LEVEL" "$SHAPES_SEEN"'
    monkeypatch.setattr(sys, "executable", fake_python(setup["tmp"], body))
    assert verify_in_fresh_process(str(setup["model"]), "d", "p", 5) == {
        "level": "2",
        "seen": "yes",
    }


# ------------------------------------------------ verify, on a SavedModel of known weights

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}  # sorted


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """A colour data set (5 test images a class), an oracle model reading the dominant
    colour (probabilities differ from image to image) and its predictions.csv, written
    from the model as served, as evaluate writes it."""
    root = tmp_path_factory.mktemp("oracle")
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / "src" / name).mkdir(parents=True)
        for i in range(8):
            noise = rng.integers(0, 60, (8, 8, 3))
            pixels = np.clip(np.array(rgb) * (0.3 + 0.07 * i) + noise, 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / "src" / name / f"{i:02d}.png")
    split_dataset(str(root / "src"), str(root / "ds"), seed=1, train_fraction=0.4, val_fraction=0.1)
    kernel = np.zeros((3, 3), np.float32)
    for cls, channel in enumerate([2, 1, 0]):
        kernel[channel, cls] = 0.02
    save_oracle(root / "model", kernel, np.zeros(3, np.float32), list(COLOURS))
    from components import serving

    predict, classes = serving.load(root / "model")
    images = images_by_path(root / "ds")
    served = predict(list(images.values()))
    labels = np.array([classes.index(Path(p).parent.name) for p in images])
    predictions.write(root / "p.csv", list(images), classes, labels, served.argmax(1), served)
    return {
        "root": root,
        "model": str(root / "model"),
        "data": str(root / "ds"),
        "csv": str(root / "p.csv"),
        "served": dict(zip(images, served, strict=True)),
    }


def edited(oracle, name: str, change) -> str:
    """predictions.csv with ``change`` applied to its rows (path -> probabilities)."""
    classes, rows = predictions.read(oracle["csv"])
    change(rows)
    paths = list(rows)
    probabilities = np.array([rows[p] for p in paths])
    labels = probabilities.argmax(1)
    path = oracle["root"] / name
    predictions.write(path, paths, classes, labels, labels, probabilities)
    return str(path)


def sampled(oracle, sample: int) -> list[str]:
    """The test images evaluate's stratified sample of ``sample`` picks, in manifest order."""
    manifest = dataset.read_manifest(oracle["data"])
    test = [e for e in manifest if e.split == "test"]
    labels = dataset.label_indices(test, list(COLOURS), oracle["data"])
    return [test[i].path for i in stratified_sample(labels, sample)]


@pytest.mark.parametrize("sample", [4, 100])
def test_verify_checks_evaluates_sample_and_reports_the_largest_difference(oracle, sample):
    """The images checked are evaluate's stratified sample; the difference reported is the
    largest over them between the model as served now and predictions.csv (rounded to
    six decimals there, so above 0 and below the tolerance)."""
    _, expected = predictions.read(oracle["csv"])
    chosen = sampled(oracle, sample)
    assert (len(chosen) < len(expected)) == (sample < len(expected))
    worst = max(float(np.abs(oracle["served"][p] - expected[p]).max()) for p in chosen)
    result = verify(oracle["model"], oracle["data"], oracle["csv"], sample)
    assert result == {
        "images": len(chosen),
        "max_difference": pytest.approx(worst, rel=1e-3, abs=1e-9),
        "tolerance": TOLERANCE,
    }
    assert 0 < result["max_difference"] < 1e-6


def test_verify_tolerates_a_difference_up_to_its_tolerance_and_not_beyond(oracle):
    """At exactly the tolerance the model passes; a hair below it, it is refused, naming
    the image, the difference and the tolerance."""
    worst = verify(oracle["model"], oracle["data"], oracle["csv"], 100)["max_difference"]
    assert verify(oracle["model"], oracle["data"], oracle["csv"], 100, worst)["max_difference"]
    below = float(np.nextafter(worst, 0))
    with pytest.raises(VerificationError) as refused:
        verify(oracle["model"], oracle["data"], oracle["csv"], 100, below)
    path, _, why = str(refused.value).partition(": ")
    assert path in sampled(oracle, 100)
    assert why == f"probabilities differ from the evaluation's by {worst:.2e} (more than {below})"


def test_verify_refuses_one_image_whose_row_is_off_and_names_it(oracle):
    """Each image is held to its own row: one sampled image 3e-4 off (same class) is
    refused by name; one outside the sample is not looked at."""
    chosen = sampled(oracle, 4)
    outside = next(p for p in predictions.read(oracle["csv"])[1] if p not in chosen)

    def shift(path):
        def change(rows):
            top = rows[path].argmax()  # +3e-4 there, -1.5e-4 elsewhere: same class
            rows[path] = rows[path] - 1.5e-4 + 4.5e-4 * (np.arange(3) == top)

        return change

    off = edited(oracle, "off.csv", shift(chosen[1]))
    with pytest.raises(
        VerificationError, match=rf"^{chosen[1]}: probabilities differ .* by [23]\.\d\de-04"
    ):
        verify(oracle["model"], oracle["data"], off, 4)
    assert verify(oracle["model"], oracle["data"], edited(oracle, "out.csv", shift(outside)), 4)


def test_verify_refuses_a_different_predicted_class_naming_both(oracle):
    """An image whose evaluated row picks another class: refused naming the image, what
    the model predicts and what evaluation said, whatever the size of the gap."""
    path = sampled(oracle, 4)[0]
    served = oracle["served"][path]

    def swap(rows):
        order = np.argsort(rows[path])
        rows[path] = rows[path].copy()
        rows[path][[order[-1], order[-2]]] = rows[path][[order[-2], order[-1]]]

    with pytest.raises(VerificationError) as refused:
        verify(oracle["model"], oracle["data"], edited(oracle, "swap.csv", swap), 4, 1.0)
    second = list(COLOURS)[int(np.argsort(served)[-2])]
    assert str(refused.value) == (
        f"{path}: the written model predicts {list(COLOURS)[served.argmax()]}, evaluation {second}"
    )


def test_verify_refuses_predictions_of_other_images(oracle):
    """predictions.csv missing one test image, or holding one more: refused, naming the
    file and the data set."""

    def drop(rows):
        rows.pop(next(iter(rows)))

    def add(rows):
        rows["test/blue/99.png"] = next(iter(rows.values()))

    for name, change in (("drop.csv", drop), ("add.csv", add)):
        csv = edited(oracle, name, change)
        with pytest.raises(VerificationError) as refused:
            verify(oracle["model"], oracle["data"], csv, 4)
        assert str(refused.value) == f"{csv}: does not hold the test images of {oracle['data']}"


def test_verify_refuses_a_model_whose_classes_are_not_the_evaluated_ones(oracle):
    """Same images, same numbers, but evaluation scored classes in another name: refused,
    naming the model folder and both lists."""
    text = Path(oracle["csv"]).read_text().replace("p_red", "p_yellow", 1)
    renamed = oracle["root"] / "renamed.csv"
    renamed.write_text(text)
    with pytest.raises(VerificationError) as refused:
        verify(oracle["model"], oracle["data"], str(renamed), 4)
    assert str(refused.value) == (
        f"{oracle['model']}: classes {list(COLOURS)}, but evaluation scored "
        f"{['blue', 'green', 'yellow']}"
    )


def test_verify_names_the_manifest_whose_test_label_the_model_does_not_know(oracle, tmp_path):
    """A test image relabelled in the data set's manifest (a class the model has no
    output for): refused, naming that manifest, before any image is scored."""
    from components.dataset import DataError

    copy = tmp_path / "ds"
    shutil.copytree(oracle["data"], copy)
    manifest = dataset.read_manifest(copy)
    first = next(i for i, e in enumerate(manifest) if e.split == "test")
    manifest[first] = dataclasses.replace(manifest[first], label="yellow")
    dataset.write_manifest(manifest, copy)
    with pytest.raises(DataError) as refused:
        verify(oracle["model"], str(copy), oracle["csv"], 4)
    assert str(refused.value) == (
        f"{copy / dataset.MANIFEST}: classes ['yellow'] unknown to the model"
    )
