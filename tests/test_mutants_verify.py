"""Export's verification, fast: the fresh verification process as export starts it (on
the real ``export()`` of a fake model folder, with a stand-in interpreter), and ``verify``
on a tiny SavedModel of known weights. Each test pins what export or a user relies on: the
protocol with the verification process, the images checked, the tolerance, and the
one-line refusals naming the image or file and the values."""

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from export_setup import export_setup, run_export
from helpers import images_by_path, save_oracle
from PIL import Image

from shapes_pipeline.helpers import dataset, predictions
from shapes_pipeline.steps.evaluate import stratified_sample
from shapes_pipeline.steps.export import verify_in_fresh_process
from shapes_pipeline.steps.split import split_dataset
from shapes_pipeline.steps.verify import TOLERANCE, VerificationError, verify


@pytest.fixture
def setup(tmp_path):
    """A fake model, its passing evaluation, a data set folder and a registry folder."""
    return export_setup(tmp_path)


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
    """The process is ``python -m shapes_pipeline.steps.verify COPY DATA PREDICTIONS
    SAMPLE``, on the staged copy (not the model folder), the sample evaluate checked serving
    on; the JSON on its last stdout line (TensorFlow may print before it) joins the metadata."""
    result = {"images": 7, "max_difference": 1e-06, "tolerance": 0.0001}
    body = f"echo 'some log line'\necho '{json.dumps(result)}'"
    monkeypatch.setattr(sys, "executable", fake_python(setup["tmp"], body))
    published = run_export(setup, verify="reload")
    argv = (setup["tmp"] / "argv").read_text().splitlines()
    assert argv[:2] == ["-m", "shapes_pipeline.steps.verify"]
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
    from shapes_pipeline.helpers import serving

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
    from shapes_pipeline.helpers.dataset import DataError

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
