"""The traps a new user met on their own photos (issue 32): each said before any step,
in one line, with the fix."""

import json

import keras
import pytest
from helpers import cli_here

from shapes_pipeline.runners.parameters import model_name_from


def dry_run(tmp_path, demo_data, *options: str):
    return cli_here("run", "--data", str(demo_data), "--registry", "reg", "--dry-run", *options,
                    cwd=tmp_path)  # fmt: skip


@pytest.mark.slow  # builds a backbone, in a process of its own per check
def test_a_weights_file_that_does_not_fit_the_backbone_is_refused_before_any_step(
    tmp_path, demo_data
):
    keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(tmp_path / "small.weights.h5")
    fits = dry_run(tmp_path, demo_data, "--weights", "small.weights.h5",
                   "--backbone", "MobileNetV3Small", "--image-size", "32")  # fmt: skip
    assert fits.returncode == 0, fits.stderr
    for backbone in ("MobileNet", "MobileNetV3Large"):
        done = dry_run(tmp_path, demo_data, "--weights", "small.weights.h5",
                       "--backbone", backbone, "--image-size", "32")  # fmt: skip
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"does not load into {backbone} without its top" in done.stderr
        assert len(done.stderr) <= 301 and not (tmp_path / "runs").exists()


def test_weights_auto_is_explained_before_any_step_with_its_fix(tmp_path, demo_data):
    said = dry_run(tmp_path, demo_data).stdout  # the local default is auto
    note = said[: said.index("{")]
    assert "--weights auto" in note and "random" in note and "--weights FILE" in note
    quiet = dry_run(tmp_path, demo_data, "--weights", "none").stdout
    assert "--weights auto" not in quiet


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ("/photos/my flowers", "my-flowers"),
        ("gs://b/cats-2024/", "cats-2024"),
        ("/x/pets.zip", "pets"),
        ("/x/___", "shapes-classifier"),
        (None, "shapes-classifier"),
        ("/x/" + "a" * 300, "a" * 100),
        ("/x/.hidden.", "hidden"),
        ("/data/MAX/", "MAX"),
        ("/x/Xray", "Xray"),
        ("a/b/c", "c"),
        ("Flowers", "Flowers"),
    ],  # fmt: skip
)
def test_a_model_is_named_after_its_data_unless_named(data, name):
    assert model_name_from(data) == name


def test_the_name_from_the_data_is_what_a_run_publishes_under(tmp_path, demo_data):
    named = json.loads(dry_run(tmp_path, demo_data).stdout.split("\n", 2)[2])
    assert named["model_name"] == demo_data.name
    given = dry_run(tmp_path, demo_data, "--model-name", "mine").stdout
    assert json.loads(given[given.index("{") :])["model_name"] == "mine"


def test_the_readmes_names_and_a_typo_each_get_one_line(tmp_path, demo_data):
    """``--image_size`` (the README's parameter name) works as ``--image-size``; a typo is
    one line with the closest option, not the usage."""
    taken = dry_run(tmp_path, demo_data, "--image_size", "96")
    assert taken.returncode == 0, taken.stderr
    assert json.loads(taken.stdout[taken.stdout.index("{") :])["image_size"] == 96
    typo = dry_run(tmp_path, demo_data, "--imge-size", "96")
    assert typo.returncode == 2 and typo.stderr.count("\n") == 1
    assert "(did you mean --image-size?)" in typo.stderr and "usage" not in typo.stderr
