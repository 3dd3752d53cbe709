"""Export: verified before publishing, published in one step, never overwriting, and
promoted only over the model the gate compared against. Races, crashes and killed
exports are in test_export_faults.py."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import EXPORTED, published, run_export, save_oracle

from shapes_pipeline.helpers import artifact, registry, serving
from shapes_pipeline.helpers.predictions import read as read_predictions
from shapes_pipeline.helpers.registry import PromotionConflict
from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.steps import export as export_module
from shapes_pipeline.steps.export import export
from shapes_pipeline.steps.verify import VerificationError, verify

pytestmark = pytest.mark.slow  # trains, exports or starts a browser


def test_export_publishes_a_verified_servable_version(trained, split_dir, evaluated, tmp_path):
    root = tmp_path / "registry"
    facts = run_export(trained, split_dir, evaluated, str(root))
    version = root / EXPORTED / facts["version"]
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
    assert registry.production_version(str(root), EXPORTED) == facts["version"]
    names = sorted(p.name for p in (root / EXPORTED).iterdir())
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
    assert registry.production_version(str(root), EXPORTED) is None


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
            registry=str(root), model_name=EXPORTED, verify="reload",
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
            model_name=EXPORTED,
        )
    first = run_export(trained, split_dir, evaluated, root)
    # The gate compared against "no production model", but there is one now:
    with pytest.raises(PromotionConflict, match="production is no longer empty"):
        run_export(trained, split_dir, evaluated, root)
    assert published(root) == [first["version"]]


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
