"""The bad-input set, made here: each file is either handled (read, or ignored with a
warning in the report) or stops the run before training with one line naming it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import FAST, cli, cli_here, registry_with_a_version, tree_bytes
from PIL import Image

from shapes_pipeline.helpers.dataset import DataError, read_manifest
from shapes_pipeline.steps.split import split_dataset

SPLIT = {"seed": 230, "train_fraction": 0.8, "val_fraction": 0.1}
ODD_CLASS = "carrés pleins"  # a space and a non-ASCII letter


def shape_image(mode: str, size: int = 28) -> Image.Image:
    """A filled square: something the model can learn, in any mode."""
    pixels = np.zeros((size, size), dtype=np.uint8)
    pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    grey = Image.fromarray(pixels, "L")
    if mode == "I;16":
        return Image.fromarray(pixels.astype(np.uint16) * 257)
    return grey.convert(mode)


def odd_data(demo_data: Path, root: Path) -> Path:
    """The demo data with every kind of file that must be handled."""
    data = root / "odd"
    shutil.copytree(demo_data, data)
    (data / "squares").rename(data / ODD_CLASS)
    shape_image("RGB").save(data / "circles" / "a photo.jpg", "JPEG")  # a JPEG among PNGs
    shape_image("I;16").save(data / ODD_CLASS / "sixteen-bit.png")
    shape_image("P").save(data / ODD_CLASS / "palette.png")
    shape_image("L").save(data / "triangles" / "grey.png")
    shape_image("RGBA").save(data / "triangles" / "rgba.png")
    shape_image("RGB", 4000).save(data / ODD_CLASS / "large-4000.png")
    (data / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (data / "circles" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (data / "circles" / "notes.txt").write_text("drawn by hand")
    (data / "triangles" / "more").mkdir()
    shape_image("RGB").save(data / "triangles" / "more" / "nested.png")
    return data


def test_odd_files_are_read_or_ignored_with_a_warning(demo_data, tmp_path):
    data = odd_data(demo_data, tmp_path)
    facts = split_dataset(str(data), str(tmp_path / "out"), **SPLIT)
    assert facts["classes"] == ["carrés pleins", "circles", "triangles"]
    used = {Path(e.path).name for e in read_manifest(tmp_path / "out")}
    for name in ("a photo.jpg", "sixteen-bit.png", "palette.png", "grey.png", "rgba.png"):
        assert name in used
    assert "large-4000.png" in used
    assert not used & {".DS_Store", "notes.txt", "nested.png"}
    (warning,) = [w for w in facts["warnings"] if w.startswith("ignored")]
    assert "ignored 4 entries" in warning
    for entry in (".DS_Store", "circles/.DS_Store", "circles/notes.txt", "triangles/more/"):
        assert entry in warning


@pytest.mark.e2e
def test_a_run_on_odd_files_trains_exports_predicts_and_reruns_from_the_cache(
    demo_data, tmp_path, monkeypatch
):
    """Also: secrets in the environment and a key file end up in no log, artifact or
    report; and a second run with ``--cache`` reuses split and train and stores no second
    copy of the same model."""
    secrets = {"KFP_TOKEN": "kfp-secret-4af1", "AWS_SECRET_ACCESS_KEY": "aws-secret-77c0"}
    key_file = tmp_path.parent / f"{tmp_path.name}-key.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": "pk-secret-9d2e"}))
    for name, value in {**secrets, "GOOGLE_APPLICATION_CREDENTIALS": str(key_file)}.items():
        monkeypatch.setenv(name, value)
    data = odd_data(demo_data, tmp_path)
    options = ["--data", str(data), "--registry", "reg", "--min-accuracy", "0", "--cache"]
    done = cli("run", *options, *FAST, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    for secret in [*secrets.values(), "pk-secret-9d2e"]:
        assert secret not in done.stdout + done.stderr
        assert not [b for b in written if secret.encode() in b]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exported"] and summary["classes"] == ["carrés pleins", "circles", "triangles"]
    (kfp_run,) = Path(summary["run_dir"]).glob("shapes-transfer-learning-*")
    tasks = {p.name for p in kfp_run.iterdir()}
    assert tasks >= {
        "split",
        "plan",
        "train",
        "evaluate",
        "export",
    }
    assert summary["timings_s"]["plan"] > 0 and summary["timings_s"]["train"] > 0
    assert "[3/6] extract   started" in done.stdout and "[4/6] train     started" in done.stdout
    assert any(w.startswith("ignored 4 entries") for w in summary["warnings"])
    assert ODD_CLASS in Path(summary["report_html"]).read_text()
    odd = [data / ODD_CLASS / n for n in ("sixteen-bit.png", "palette.png", "large-4000.png")]
    predicted = cli(
        "predict", "--model", "reg", "--model-name", "odd", *map(str, odd), cwd=tmp_path
    )
    assert predicted.returncode == 0, predicted.stderr
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [line["path"] for line in lines] == list(map(str, odd))
    assert all(set(line["probabilities"]) == set(summary["classes"]) for line in lines)
    # a folder: every image inside, recursively (hidden files and others left out)
    in_folder = cli("predict", "--model", "reg", "--model-name", "odd", str(data / "triangles"),
                    cwd=tmp_path)  # fmt: skip
    assert in_folder.returncode == 0, in_folder.stderr
    found = [json.loads(line)["path"] for line in in_folder.stdout.splitlines()]
    expected = sorted(p for p in (data / "triangles").rglob("*.png"))
    assert found == [str(p) for p in expected] and str(data / "triangles/more/nested.png") in found

    again = cli("run", *options, *FAST, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((tmp_path / "summary.json").read_text())
    assert rerun["reused"] == ["split", "train"] and summary["reused"] == []
    assert "reused (cache) split, train" in again.stdout
    assert rerun["timings_s"]["split"] == rerun["timings_s"]["train"] == 0.0
    assert rerun["trained_model_uri"] == summary["trained_model_uri"]
    # evaluate ran again (never cached: the gate depends on the registry) and met the same
    # model as champion; export promoted the stored version instead of storing a copy.
    assert rerun["gate"]["champion_uri"] == summary["model_uri"] == rerun["model_uri"]
    # published under the data folder's name ("odd"), as nothing named the model
    versions = [p.name for p in (tmp_path / "reg" / "odd").iterdir() if p.is_dir()]
    assert versions == [Path(summary["model_uri"]).name]


def _truncated(d: Path) -> None:
    png = (d / "circles" / "circle_000.png").read_bytes()
    (d / "circles" / "truncated.png").write_bytes(png[: len(png) // 2])


def _too_many_pixels(d: Path) -> None:
    # 14000 x 13000 pixels, twice PIL's MAX_IMAGE_PIXELS: a decompression bomb (a small file)
    Image.new("1", (14000, 13000)).save(d / "circles" / "bomb.png")


def _other_format(kind: str):
    """A real image in a format Pillow reads and the model's decoder does not, named .png."""
    return lambda d: shape_image("RGB", 32).save(d / "circles" / f"really-{kind.lower()}.png", kind)


def _huge(d: Path) -> None:
    # 10000 x 10000 pixels in a few KB: over max_image_pixels (40 million by default)
    Image.new("1", (10000, 10000)).save(d / "circles" / "huge.png")


BAD = {
    "tiff-named-png": (_other_format("TIFF"), "really-tiff.png: a TIFF image, which the model"),
    "ico-named-png": (_other_format("ICO"), "really-ico.png: a ICO image, which the model"),
    "ppm-named-png": (_other_format("PPM"), "really-ppm.png: a PPM image, which the model"),
    "pcx-named-png": (_other_format("PCX"), "really-pcx.png: a PCX image, which the model"),
    "over-max-pixels": (_huge, "huge.png: 10000x10000 pixels, more than max_image_pixels"),
    "truncated-png": (_truncated, "circles/truncated.png: not a readable image"),
    "zero-byte": (lambda d: (d / "circles" / "empty.png").write_bytes(b""), "empty.png: not a"),
    "text-named-png": (lambda d: (d / "circles" / "t.png").write_text("hi"), "t.png: not a"),
    "too-many-pixels": (_too_many_pixels, "circles/bomb.png: image too large"),
    "class-with-one-image": (
        lambda d: [(d / "stars").mkdir(), shape_image("RGB").save(d / "stars" / "s.png")],
        "stars: 1 image(s) leave the train/val split empty",
    ),
    "one-class": (
        lambda d: [shutil.rmtree(d / "squares"), shutil.rmtree(d / "triangles")],
        "found 1 class folder(s) ['circles'], need at least 2",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_files_stop_the_run_before_training_naming_them(demo_data, tmp_path, case):
    mutate, message = BAD[case]
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    mutate(data)
    with pytest.raises(DataError) as error:
        split_dataset(str(data), str(tmp_path / "out"), **SPLIT)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "case", ["truncated-png", "too-many-pixels", "class-with-one-image", "tiff-named-png"]
)
def test_the_cli_refuses_bad_files_in_one_line(demo_data, tmp_path, case):
    assert_run_refused(demo_data, tmp_path, *BAD[case])


def assert_run_refused(demo_data: Path, tmp_path: Path, mutate, message: str) -> None:
    """``run`` on the demo data changed by ``mutate``: exit 2 and one line saying
    ``message``, before any step, with a populated registry left byte for byte as it was."""
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    mutate(data)
    before = registry_with_a_version(tmp_path / "reg")
    done = cli_here("run", "--data", str(data), "--registry", "reg", *FAST, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert tree_bytes(tmp_path / "reg") == before and not (tmp_path / "runs").exists()


def test_predict_refuses_what_the_model_cannot_decode_in_one_line(tmp_path):
    shape_image("RGB", 32).save(tmp_path / "scan.png", "TIFF")
    done = cli_here("predict", "--model", "registry", str(tmp_path / "scan.png"), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"{tmp_path / 'scan.png'}: a TIFF image, which the model cannot decode" in done.stderr


def _odd_name(d: Path) -> None:
    (d / "squares").rename(d / "squ\nares")


def _not_utf8(d: Path) -> None:
    source = (d / "circles" / "circle_000.png").read_bytes()
    with open(os.path.join(os.fsencode(d / "circles"), b"caf\xe9.png"), "wb") as f:
        f.write(source)


def _link_outside(d: Path) -> None:
    outside = d.parent / "elsewhere.png"
    shutil.copyfile(d / "circles" / "circle_000.png", outside)
    (d / "circles" / "link.png").symlink_to(outside)


NAMES = {
    "control-character": (_odd_name, "holds 'squ\\nares', a name that is not UTF-8 or has"),
    "not-utf8": (_not_utf8, "circles: holds 'caf\\udce9.png', a name that is not UTF-8"),
    "link-outside": (_link_outside, "circles/link.png: a link to"),
}


@pytest.mark.parametrize("case", NAMES)
def test_names_that_could_break_a_step_or_a_log_line_are_refused(demo_data, tmp_path, case):
    """One line, the name shown escaped, before any step; the registry unchanged."""
    assert_run_refused(demo_data, tmp_path, *NAMES[case])


def test_unreadable_folders_and_files_are_named(demo_data, tmp_path):
    """As root, only without the capabilities that override file permissions."""
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]
    for locked, message in (
        (data / "circles" / "circle_000.png", "circle_000.png: cannot read this file"),
        (data / "squares", "squares: cannot read this folder (permission denied)"),
    ):
        locked.chmod(0)
        done = subprocess.run(
            [*(prefix if os.geteuid() == 0 else []), sys.executable, "-m",
             "shapes_pipeline.runners.cli", "run", "--data", str(data), "--registry", "reg", *FAST],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        locked.chmod(0o755)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert message in done.stderr
