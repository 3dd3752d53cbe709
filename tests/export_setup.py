"""A fake model export can publish without TensorFlow (its ``verify="hash"`` path never
reads the SavedModel, it copies and hashes it), its passing evaluation, and a run of the real
``export()`` on them: shared by test_mutants_export.py and test_mutants_verify.py."""

import json
from pathlib import Path

from shapes_pipeline.helpers import artifact, dataset
from shapes_pipeline.steps.export import export

MODEL = "shapes"
CLASSES = ["circles", "squares", "triangles"]


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


def export_setup(tmp_path: Path) -> dict:
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
