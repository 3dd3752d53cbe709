"""The whole pipeline through kfp.local, driven by the CLI as a user would run it."""

import csv
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import kfp
import numpy as np
import pytest
from helpers import (
    FAST,
    LEARNING,
    assert_varied,
    cli,
    cli_here,
    imagenet_mobilenet,
    images_by_path,
    registry_with_a_version,
    run,
    save_oracle,
    tree_bytes,
    upload_folder,
)

from shapes_pipeline.helpers.dataset import sha256_of
from shapes_pipeline.helpers.demo_data import generate


@pytest.mark.e2e
def test_run_from_gcs_to_gcs(tmp_path, demo_data, bucket):
    data = upload_folder(bucket, demo_data, "raw/shapes")
    registry = f"gs://{bucket.name}/registry"
    learning = [*LEARNING, "--weights", str(imagenet_mobilenet())]
    done = cli(
        "run", "--data", data, "--registry", registry, "--min-accuracy", "0", *learning,
        "--extract-workers", "2", "--model-name", "shapes-classifier", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())

    assert summary["classes"] == ["circles", "squares", "triangles"]
    matrix = np.array(summary["confusion_matrix"])
    assert matrix.sum() == 9 and matrix.sum(axis=1).tolist() == [3, 3, 3]
    assert summary["test_accuracy"] == pytest.approx(np.trace(matrix) / 9)
    assert summary["classification_report"]["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert (summary["backbone"], summary["warnings"]) == ("MobileNet", [])
    assert summary["weights"] == str(imagenet_mobilenet())
    assert summary["caching"].startswith("features of each image, extracted once by 2 task(s)")
    assert summary["precision"] == "float32" and any("CPU" in d for d in summary["devices"])
    timings = summary["timings_s"]
    steps = {"split", "plan", "extract", "train", "evaluate", "export"}
    assert set(timings) == {*steps, "total"}
    assert all(timings[k] > 0 for k in timings)
    memory = summary["peak_memory_mb"]
    assert set(memory) == steps
    assert all(memory[k] > 0 for k in memory)
    assert timings["total"] > sum(timings[s] for s in steps - {"extract"})
    assert f"test accuracy  {summary['test_accuracy']:.4f} (95% CI" in done.stdout
    assert f"exported       {summary['model_uri']}" in done.stdout
    assert len(done.stdout.splitlines()) <= 40 and "\x1b[" not in done.stdout

    run_dir = Path(summary["run_dir"])
    dataset, trained = Path(summary["dataset_uri"]), Path(summary["trained_model_uri"])
    # What the KFP artifacts hold, as kfp.local wrote them for each task:
    (kfp_run,) = [p for p in run_dir.iterdir() if p.name.startswith("shapes-transfer")]
    kfp_outputs = json.loads((kfp_run / "evaluate" / "executor_output.json").read_text())
    artifacts = {name: entry["artifacts"][0] for name, entry in kfp_outputs["artifacts"].items()}
    assert artifacts["metrics"]["metadata"]["accuracy"] == summary["test_accuracy"]
    confusion = artifacts["confusion"]["metadata"]["confusionMatrix"]
    assert [c["displayName"] for c in confusion["annotationSpecs"]] == summary["classes"]
    assert [row["row"] for row in confusion["rows"]] == summary["confusion_matrix"]
    assert kfp_outputs["parameterValues"]["Output"] is True
    assert summary["gate"]["passed"] and summary["gate"]["champion_uri"] is None
    assert summary["gate"]["reason"].startswith("no production model yet")
    assert artifacts["metrics"]["metadata"]["gate_passed"] == 1.0
    assert (dataset / "manifest.csv").exists() and (dataset / "shards.json").exists()
    # the data set's shards, fanned out to two extract tasks (ParallelFor), one artifact each
    groups = sorted(kfp_run.glob("for-loop-*-iteration-*/extract/features/features.json"))
    assert [json.loads(g.read_text())["group"] for g in groups] == [0, 1]
    assert (trained / "saved_model" / "1" / "saved_model.pb").exists()
    assert {p.name for p in (run_dir / "logs").iterdir()} >= {f"{s}.log" for s in summary["logs"]}
    assert set(summary["logs"]) == steps
    assert summary["parameters"]["epochs"] == 5 and summary["parameters"]["seed"] == 230
    assert summary["best_epoch"] == summary["training"]["best_epoch"] >= 1
    # what make bench reads: every phase of the train step, the SavedModel's save included
    phases = {f"{p}_seconds" for p in ("build", "feature", "head", "training", "save")}
    assert phases <= set(summary["training"])
    # and where each TensorFlow step's seconds went, which adds up to the step's seconds
    spent = summary["phase_seconds"]
    for name in ("extract", "train", "evaluate"):
        assert spent[name]["import"] > 0 and spent[name]["build"] > 0, name
    assert spent["extract"]["trace"] > 0 and spent["extract"]["work"] > 0
    # train completes extract's serving model: it traces nothing, and saves it
    assert spent["train"]["trace"] == 0 and spent["train"]["save"] > 0
    assert spent["split"]["import"] > 0 and spent["export"]["import"] > 0
    train_s = summary["timings_s"]["train"]
    assert abs(sum(spent["train"].values()) - train_s) <= 0.05 * train_s
    # three figures and a thumbnail of each of the 9 test images (mistakes and correct ones)
    assert Path(summary["report_uri"]).read_text().count("data:image/png;base64,") == 3 + 9
    assert Path(summary["report_html"]).read_text() == Path(summary["report_uri"]).read_text()
    assert f"report         {summary['report_html']}" in done.stdout
    markdown = (kfp_run / "evaluate" / "summary").read_text()
    assert f"Test accuracy: **{summary['test_accuracy']:.4f} (95% CI" in markdown
    with open(summary["predictions_uri"]) as f:
        predictions = list(csv.DictReader(f))
    assert len(predictions) == 9
    # Each image its own probabilities: the per-image checks below can tell rows apart.
    assert_varied([[float(p[f"p_{c}"]) for c in summary["classes"]] for p in predictions])

    # The exported version is a SavedModel that gives the evaluation's predictions.
    assert summary["exported"] and summary["model_uri"].startswith(f"{registry}/shapes-classifier/")
    local = tmp_path / "version"
    prefix = summary["model_uri"][len(f"gs://{bucket.name}/") :]
    for blob in bucket.list_blobs(prefix=prefix + "/"):
        target = local / blob.name[len(prefix) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))
    metadata = json.loads((local / "metadata.json").read_text())
    assert metadata["metrics"]["test_accuracy"] == summary["test_accuracy"]
    assert metadata["classes"] == summary["classes"]
    assert (local / "labels.txt").read_text().split() == summary["classes"]
    assert metadata["serving_uri"] == summary["model_uri"] + "/saved_model"
    evaluated_hash = json.loads((kfp_run / "evaluate" / "evaluation").read_text())["model_sha256"]
    assert metadata["verification"] == {"method": "hash", "content_sha256": evaluated_hash}
    assert metadata["pipeline_run"]["name"].startswith("shapes-transfer-learning-")
    assert metadata["pipeline_run"]["id"]
    assert metadata["packages"]["training"]["keras"] == version("keras")
    assert metadata["packages"]["export"]["kfp"] == kfp.__version__
    assert metadata["manifest_sha256"] == sha256_of(dataset / "manifest.csv")
    registered = json.loads((kfp_run / "export" / "executor_output.json").read_text())
    (kfp_model,) = registered["artifacts"]["registered_model"]["artifacts"]
    assert {k: kfp_model["metadata"][k] for k in metadata} == metadata

    import tensorflow as tf

    served = tf.saved_model.load(str(local / "saved_model" / "1"))
    by_path = images_by_path(dataset)
    files = [by_path[p["path"]] for p in predictions]
    out = served.signatures["serving_default"](image_bytes=tf.constant(files))
    evaluated = [[float(p[f"p_{c}"]) for c in summary["classes"]] for p in predictions]
    np.testing.assert_allclose(out["probabilities"].numpy(), evaluated, atol=1e-5)
    assert [c.decode() for c in out["class"].numpy()] == [p["predicted_class"] for p in predictions]
    latest = bucket.blob("registry/shapes-classifier/LATEST").download_as_text()
    assert summary["model_uri"].endswith("/" + latest.strip())

    # A second run meets the first model as the production model, scored on its test images
    # (downloaded from gs://): the same data and seed give the same accuracy, so it passes
    # with max_regression 0 and becomes the production model.
    again = cli(
        "run", "--data", data, "--registry", registry, "--min-accuracy", "0", *learning,
        "--extract-workers", "2", "--model-name", "shapes-classifier", cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    second = json.loads((tmp_path / "summary.json").read_text())
    assert second["gate"]["champion_uri"] == summary["model_uri"]
    assert second["gate"]["champion_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert second["gate"]["passed"] and second["model_uri"] != summary["model_uri"]
    latest = bucket.blob("registry/shapes-classifier/LATEST").download_as_text()
    assert second["model_uri"].endswith("/" + latest.strip())

    listed = cli("models", "--registry", registry, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = [line for line in listed.stdout.splitlines() if "shapes-classifier" not in line]
    first_version, second_version = (s["model_uri"].rsplit("/", 1)[1] for s in (summary, second))
    assert [r.split()[:2] for r in rows if first_version in r or second_version in r] == [
        [first_version, metadata["created"]],
        ["*", second_version],
    ]

    # predict from the registry (its production model), images as files on disk
    images = [tmp_path / Path(p["path"]).name for p in predictions[:3]]
    for image, p in zip(images, predictions, strict=False):
        image.write_bytes(by_path[p["path"]])
    predicted = cli("predict", "--model", registry, *map(str, images), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [line["path"] for line in lines] == list(map(str, images))
    assert [line["class"] for line in lines] == [p["predicted_class"] for p in predictions[:3]]
    for line, p in zip(lines, predictions[:3], strict=True):
        for c in summary["classes"]:
            assert line["probabilities"][c] == pytest.approx(float(p[f"p_{c}"]), abs=1e-5)


@pytest.mark.e2e
def test_training_learns_the_shapes(tmp_path):
    """Trained, not only run: 300 demo shapes, real ImageNet MobileNet weights at 64 px,
    10 epochs, must beat 0.9 where chance is 0.33 (docs/testing.md has the margin
    measured). Training labels shuffled against their images fail it."""
    generate(str(tmp_path / "shapes"), per_class=100, seed=5)
    done = cli(
        "run", "--data", str(tmp_path / "shapes"), "--registry", "reg", "--min-accuracy", "0.9",
        "--backbone", "MobileNet", "--weights", str(imagenet_mobilenet()), "--image-size", "64",
        "--epochs", "10", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert np.sum(summary["confusion_matrix"]) == 60 and summary["test_accuracy"] >= 0.9
    assert summary["gate"]["passed"] and summary["exported"]


@pytest.mark.e2e
def test_gate_blocks_export_below_min_accuracy(tmp_path, demo_data):
    """Also: weights=auto with no internet trains from random init and says so everywhere."""
    done = run(demo_data, "--min-accuracy", "1.0", "--weights", "auto", cwd=tmp_path)
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exported"] is False and summary["model_uri"] is None
    assert summary["timings_s"]["export"] == 0.0
    assert "gate           REFUSED: test accuracy" in done.stdout
    assert "exported       no" in done.stdout
    assert not (tmp_path / "reg").exists()

    assert summary["weights"] == "none"
    (warning,) = summary["warnings"]
    assert "RANDOMLY INITIALISED" in warning
    assert f"WARNING: {warning}" in done.stdout
    assert "RANDOMLY INITIALISED" in Path(summary["report_uri"]).read_text()

    listed = cli("models", "--registry", "reg", cwd=tmp_path)
    assert listed.returncode == 2 and listed.stderr == "error: reg: no such registry folder\n"
    image = str(next((demo_data / "circles").iterdir()))
    refused = cli("predict", "--model", "reg", image, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("error: reg: neither a model version")


def _copy(demo_data: Path, tmp_path: Path) -> Path:
    shutil.copytree(demo_data, tmp_path / "data")
    return tmp_path / "data"


BAD_INPUTS = {
    "one-class": (
        lambda d: [shutil.rmtree(d / "squares"), shutil.rmtree(d / "triangles")],
        "data: found 1 class",
    ),
    "empty-class": (
        lambda d: [p.unlink() for p in (d / "squares").iterdir()],
        "squares: class folder has no images",
    ),
    "not-an-image": (
        lambda d: (d / "circles" / "x.png").write_text("text"),
        "circles/x.png: not a readable image",
    ),
    "missing-path": (lambda d: shutil.rmtree(d), "data: not an existing folder"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_stops_before_anything_runs(tmp_path, demo_data, case):
    mutate, message = BAD_INPUTS[case]
    data = _copy(demo_data, tmp_path)
    mutate(data)
    before = registry_with_a_version(tmp_path / "reg")
    done = cli_here("run", "--data", str(data), "--registry", "reg", *FAST, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert message in done.stderr and str(tmp_path) in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert tree_bytes(tmp_path / "reg") == before and not (tmp_path / "runs").exists()


def test_missing_buckets_are_named(tmp_path, demo_data, bucket):
    done = cli_here("run", "--data", "gs://no-such-bucket-xyz/shapes", *FAST, cwd=tmp_path)
    assert done.returncode == 2 and "gs://no-such-bucket-xyz/shapes" in done.stderr
    data = upload_folder(bucket, demo_data, "shapes")
    done = cli_here(
        "run", "--data", data, "--registry", "gs://no-registry-bucket/models", *FAST, cwd=tmp_path
    )
    assert (
        done.returncode == 2
        and "no-registry-bucket" in done.stderr
        and done.stderr.count("\n") == 1
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "option, value",
    [
        ("--image-size", "8"),
        ("--val-fraction", "1.5"),
        ("--epochs", "0"),
        ("--shard-mb", "0.001"),
        ("--extract-workers", "101"),
        ("--serving-sample", "0"),
        ("--gate-sample", "0"),
        ("--feature-memory-mb", "-1"),
        ("--augment-rotation", "200.0"),
        ("--augment-zoom", "0.95"),
    ],
)
def test_out_of_range_parameters_are_named(tmp_path, demo_data, option, value):
    before = registry_with_a_version(tmp_path / "reg")
    done = cli_here(
        "run", "--data", str(demo_data), "--registry", "reg", option, value, cwd=tmp_path
    )
    assert done.returncode == 2 and done.stderr.startswith(f"error: {option} {value}: must be")
    assert tree_bytes(tmp_path / "reg") == before and not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_a_failing_step_fails_the_run_with_its_reason_and_publishes_nothing(tmp_path, demo_data):
    """weights=imagenet cannot be had offline: the extract step (the first to build the
    backbone) says why, and the run prints that line, the end of the step's log and the
    log's path (exit status 1)."""
    before = registry_with_a_version(tmp_path / "reg")
    done = run(demo_data, "--weights", "imagenet", cwd=tmp_path)
    assert done.returncode == 1
    first, *rest = done.stderr.splitlines()
    assert first.startswith(
        "error: step 'extract' failed: weights=imagenet: cannot load ImageNet weights for "
        "MobileNetV3Small"
    )
    log = Path(rest[-1].removeprefix("full log: "))
    assert log.name == "extract.log" and log.parent.name == "logs"
    logged = [line for line in log.read_text().splitlines() if line.strip()]
    assert rest[1:-1] == logged[-len(rest[1:-1]) :]
    assert len(rest[1:-1]) <= 20 and "[3/6] extract   started" in done.stdout
    # tried once: a local run is built without KFP's retries, which would wait minutes
    assert done.stdout.count("[3/6] extract   started") == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert tree_bytes(tmp_path / "reg") == before and not (tmp_path / "summary.json").exists()


@pytest.mark.e2e
def test_two_runs_sharing_a_pipeline_root_each_find_their_own(tmp_path, demo_data):
    """Started together on one --pipeline-root: each run gets its own folder and its own
    results. One is quiet (-q: the result only), the other verbose (-v: every log line,
    without colour codes when the output is not a terminal)."""
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shapes_pipeline.runners.cli",
                "run",
                "--data",
                str(demo_data),
                "--registry",
                f"reg-{i}",
                "--summary",
                f"summary-{i}.json",
                "--pipeline-root",
                "shared",
                "--min-accuracy",
                "0",
                *FAST,
                loudness,
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i, loudness in enumerate(["-q", "-v"])
    ]
    (quiet, quiet_err), (verbose, verbose_err) = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], (quiet_err[-2000:], verbose_err[-2000:])
    summaries = [json.loads((tmp_path / f"summary-{i}.json").read_text()) for i in range(2)]
    run_dirs = [Path(s["run_dir"]) for s in summaries]
    assert run_dirs[0] != run_dirs[1] and {d.parent for d in run_dirs} == {tmp_path / "shared"}
    for i, (summary, run_dir) in enumerate(zip(summaries, run_dirs, strict=True)):
        for key in ("dataset_uri", "trained_model_uri", "report_uri", "predictions_uri"):
            assert Path(summary[key]).is_relative_to(run_dir), key
        assert summary["model_uri"].startswith(str(tmp_path / f"reg-{i}"))
    assert quiet.splitlines()[0].startswith("training ") and "[1/4]" not in quiet
    assert "Executing task" in verbose and "@shapes-event" in verbose and "\x1b[" not in verbose


@pytest.mark.e2e
def test_a_model_with_other_classes_is_refused_and_production_kept(tmp_path, demo_data):
    """Production knows two of the three classes (as when a class folder was skipped): the
    run ends with exit status 3, naming the class added, and the registry is unchanged."""
    version = tmp_path / "reg" / "shapes-classifier" / "20260101T000000Z-0123abcd"
    save_oracle(version, np.eye(3, 2, dtype=np.float32), np.zeros(2), ["circles", "squares"])
    (version / "metadata.json").write_text(json.dumps({"version": version.name}))
    (version.parent / "LATEST").write_text(f"{version.name}\n")
    before = tree_bytes(tmp_path / "reg")
    done = run(demo_data, "--min-accuracy", "0", "--model-name", "shapes-classifier", cwd=tmp_path)
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["gate"]["classes_added"] == ["triangles"] and not summary["exported"]
    assert "has other classes (classes added ['triangles'], lost none)" in done.stdout
    assert tree_bytes(tmp_path / "reg") == before
