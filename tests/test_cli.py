"""The front door: mistakes refused before any step (and before TensorFlow is imported),
in one line with exit status 2; --version, --config, --dry-run, --output."""

import json
import subprocess
import sys
import zipfile

import keras
import pytest
import yaml
from helpers import cli_here, registry_with_a_version, tree_bytes
from PIL import Image

from shapes_pipeline.helpers import settings

# Each refused before anything runs: (arguments, what the one line must say).
MISTAKES = {
    "backbone-typo": (
        ["--backbone", "MobileNetV4Tiny"],
        "--backbone MobileNetV4Tiny: not a keras.applications model; did you mean MobileNetV2",
    ),
    "weights-typo": (
        ["--weights", "imagnet"],
        "--weights imagnet: not one of imagenet, none, auto, and no such file",
    ),
    "min-accuracy": (["--min-accuracy", "2"], "--min-accuracy 2.0: must be between 0.0 and 1.0"),
    "size-for-backbone": (
        ["--backbone", "InceptionResNetV2", "--image-size", "64"],
        "--image-size 64: InceptionResNetV2 needs at least 75",
    ),
    "epochs": (["--epochs", "0"], "--epochs 0: must be between 1 and 100000"),
    "batch-size": (["--batch-size", "-3"], "--batch-size -3: must be between 1 and 4096"),
    "fractions": (
        ["--train-fraction", "0.5", "--val-fraction", "0.6"],
        "--train-fraction 0.5 and --val-fraction 0.6",
    ),
    "not-a-number": (["--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
    "backbone-cache-file": (
        ["--backbone-cache", "reg/shapes-classifier/LATEST"],
        "--backbone-cache reg/shapes-classifier/LATEST: a file, not a folder or gs:// URI",
    ),
}


@pytest.mark.parametrize("case", MISTAKES)
def test_mistakes_are_refused_in_one_line_writing_nothing(demo_data, tmp_path, case):
    arguments, message = MISTAKES[case]
    before = registry_with_a_version(tmp_path / "reg")
    done = cli_here(
        "run", "--data", str(demo_data), "--registry", "reg", *arguments, cwd=tmp_path
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = [line for line in done.stderr.splitlines() if "error: " in line]
    assert message in line and "Traceback" not in done.stderr
    assert tree_bytes(tmp_path / "reg") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg"]  # nothing else written


PROBE = """
import contextlib, io, json, sys
from shapes_pipeline.runners import cli
codes = []
for arguments in json.loads(sys.argv[1]):
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main(["run", *arguments])
        except SystemExit as e:
            codes.append(e.code)
print(sorted({"tensorflow", "matplotlib"} & set(sys.modules)), set(codes))
"""


def test_no_mistake_needs_tensorflow_or_matplotlib_to_be_refused(demo_data, tmp_path):
    """All of them in one new Python, and a registry that is a file or whose LATEST is
    empty, a TIFF named .png and a zip bomb: not one imports TensorFlow, nor matplotlib
    (which only the report's figures need)."""
    (tmp_path / "a-file").write_text("")
    registry_with_a_version(tmp_path / "reg")  # MISTAKES name a file in it
    (tmp_path / "jammed" / "shapes-classifier").mkdir(parents=True)
    (tmp_path / "jammed" / "shapes-classifier" / "LATEST").write_text("")
    data = ["--data", str(demo_data), "--model-name", "shapes-classifier"]
    registries = [[*data, "--registry", "a-file"], [*data, "--registry", "jammed"]]
    (tmp_path / "tiff" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "tiff" / "a" / "scan.png", "TIFF")
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("shapes/a/bomb.png", b"\0" * 50 * 2**20)
    bad_data = [["--data", str(tmp_path / "tiff")], ["--data", str(tmp_path / "bomb.zip")]]
    mistakes = [[*data, *arguments] for arguments, _ in MISTAKES.values()]
    cases = json.dumps(mistakes + registries + bad_data)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, cases],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.stdout.strip() == "[] {2}", done.stderr
    assert not (tmp_path / "runs").exists()


def test_backbones_are_the_installed_keras_applications():
    installed = {
        name
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    }
    assert set(settings.BACKBONES) == installed


@pytest.mark.slow
@pytest.mark.parametrize("backbone", settings.MIN_IMAGE_SIZE)
def test_the_smallest_image_size_is_the_one_keras_accepts(backbone):
    smallest = settings.MIN_IMAGE_SIZE[backbone]
    model = getattr(keras.applications, backbone)
    model(include_top=False, weights=None, input_shape=(smallest, smallest, 3))
    with pytest.raises(ValueError):
        model(include_top=False, weights=None, input_shape=(smallest - 1, smallest - 1, 3))


def test_version(tmp_path):
    done = cli_here("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "shapes-pipeline 0.1.0"


def test_config_file_with_flags_over_it_and_dry_run(demo_data, tmp_path):
    config = {"backbone": "MobileNet", "epochs": 7, "min_accuracy": 0.5, "weights": "none"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "run.json").write_text(json.dumps(config))
    for name in ("run.yaml", "run.json"):
        done = cli_here(
            "run", "--config", name, "--data", str(demo_data), "--epochs", "9", "--dry-run",
            cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        resolved = json.loads(done.stdout[done.stdout.index("{") :])
        assert resolved["backbone"] == "MobileNet" and resolved["min_accuracy"] == 0.5
        assert resolved["epochs"] == 9  # the flag wins over the file
        assert resolved["data"] == str(demo_data) and resolved["seed"] == 230
        assert set(resolved) == set(settings.defaults())
        # a local run's tasks share this machine: one extract task unless asked (a cluster: 2)
        assert resolved["extract_workers"] == 1 < settings.defaults()["extract_workers"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.yaml"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("epoch: 3\n", "unknown parameter epoch (did you mean epochs?)"),
        ("- 3\n", "must be a mapping of parameter names to values"),
        ("a: [\n", "not YAML or JSON"),
    ],
)
def test_a_bad_config_file_is_one_line(tmp_path, content, message):
    (tmp_path / "bad.yaml").write_text(content)
    done = cli_here("run", "--config", "bad.yaml", "--dry-run", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr
    missing = cli_here("run", "--config", "missing.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "--config missing.yaml: cannot read it" in missing.stderr


def test_models_as_json_and_a_missing_registry(tmp_path):
    registry_with_a_version(tmp_path / "reg")
    version = tmp_path / "reg" / "shapes-classifier" / "20260101T000000Z-0123abcd"
    (version / "metadata.json").write_text(
        json.dumps({"version": version.name, "created": "2026-01-01T00:00:00+00:00",
                    "metrics": {"test_accuracy": 0.9}, "backbone": "MobileNet"})
    )  # fmt: skip
    listed = cli_here("models", "--registry", "reg", "--output", "json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (version,) = json.loads(listed.stdout)
    assert version["production"] and version["backbone"] == "MobileNet"
    table = cli_here("models", "--registry", "reg", cwd=tmp_path)
    assert table.stdout.splitlines()[1].startswith("* 20260101T000000Z-0123abcd")
    missing = cli_here("models", "--registry", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr == "error: nowhere: no such registry folder\n"


def test_help_says_what_each_option_does_and_the_exit_codes(tmp_path):
    done = cli_here("run", "--help", cwd=tmp_path)
    text = " ".join(done.stdout.split())
    assert "(default: 500)" in text and "The most epochs the head trains" in text
    assert "exit status: 0 success; 1 a step failed" in text
    top = cli_here("--help", cwd=tmp_path).stdout
    assert "Train an image classifier by transfer learning" in top


def test_a_failed_local_run_names_the_step_its_error_and_log_and_leaves_print_alone(tmp_path):
    """The run's output is read from its child process: the step that started and did not
    end is named, with its error line and the end of its log; what came before the first
    step is in run.log; kfp.local's ``print`` swap stays in the child (it once left the
    result block indented)."""
    import builtins
    import io

    from fake_runs import failing_train

    from shapes_pipeline.runners import local_run

    original = builtins.print
    out = io.StringIO()
    with pytest.raises(local_run.StepFailed) as failed:
        local_run.run_locally(
            {}, pipeline_root=tmp_path, pipeline=failing_train,
            console=local_run.Console(out),
        )  # fmt: skip
    assert builtins.print is original
    e = failed.value
    assert (e.step, e.error, e.log.name) == ("train", "the planted failure", "train.log")
    assert "ValueError: a traceback's last line" in e.tail[-2]
    assert "[1/6] split     ........  1.0 s" in out.getvalue()
    assert "train.log" not in out.getvalue() and "error" not in out.getvalue()
    logs = e.log.parent
    assert "Task 'train' finished" in (logs / "train.log").read_text()
    assert "planted" not in (logs / "split.log").read_text()
