"""parameters.py's rules pinned value by value: how a value is shown in a one-line error
(escaped when it holds a line or control character, cut when long, a huge integer
summarised), what ``typed`` takes and what it says, and each of ``check``'s refusals
naming its option, the value and what is allowed."""

import datetime
import math
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from shapes_pipeline.helpers import demo_data, settings
from shapes_pipeline.helpers.demo_data import generate
from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.runners import parameters
from shapes_pipeline.runners.parameters import shown
from shapes_pipeline.steps import preflight

LIMIT = 60  # shown's default width


def breaks_a_line(c: str) -> bool:
    """Control characters (C0, DEL, C1) and the line and paragraph separators: what a log
    reader or str.splitlines may take as a line end or a terminal as a command."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp")


def expected_text(text: str, limit: int = LIMIT) -> str:
    escaped = repr(text) if any(breaks_a_line(c) for c in text) else text
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


@given(
    text=st.text(
        st.characters(exclude_categories=["Cs"]), max_size=80
    ),  # every code point, controls included
    limit=st.integers(10, 100),
)
@example(text=" \xa0printable spaces", limit=LIMIT)  # the space and NBSP are not controls
@example(text="\x1f", limit=LIMIT)  # the last C0 control
@example(text="\x7f", limit=LIMIT)  # DEL
@example(text="\x80", limit=LIMIT)  # the first C1 control
@example(text="\x9f", limit=LIMIT)  # the last C1 control
@example(text="\xa0\xa1", limit=LIMIT)  # the first characters after C1: shown as they are
@example(text="a\u2028b\u2029", limit=LIMIT)
@example(text="x" * LIMIT, limit=LIMIT)  # exactly the width: not cut
@example(text="x" * (LIMIT + 1), limit=LIMIT)  # one past it: cut to the width
def test_text_is_shown_as_given_unless_it_breaks_a_line_and_never_wider_than_the_limit(text, limit):
    """A value that could break the one error line is shown escaped (repr); any other
    exactly as given; either way cut to ``limit`` characters, ending in '...' when cut."""
    assert shown(text, limit) == expected_text(text, limit)
    assert len(shown(text, limit)) <= limit


@given(value=st.integers(-(10**LIMIT), 10**LIMIT))
@example(value=10**LIMIT)
@example(value=-(10**LIMIT))
def test_an_integer_up_to_ten_to_the_limit_is_shown_by_its_digits(value):
    """Up to 10**limit (inclusive) an integer is its decimal digits, cut like text."""
    assert shown(value) == expected_text(str(value))


@given(value=st.integers(10**LIMIT + 1, 10**400), negative=st.booleans())
@example(value=10**LIMIT + 1, negative=False)
@example(value=10**LIMIT + 1, negative=True)
@example(value=16**100, negative=False)  # 101 hex digits
def test_an_integer_past_ten_to_the_limit_is_shown_by_its_size_and_sign(value, negative):
    """Beyond 10**limit, printing it would cost time and say nothing (YAML reads 10**4000
    as an int): it is shown as its count of hex digits, with its sign."""
    number = -value if negative else value
    digits = len(format(value, "x"))
    sign = "-" if negative else ""
    assert shown(number) == f"{sign}<an integer of {digits} hex digits>"


@pytest.mark.parametrize(
    "value",
    [None, [7], {"a": 7}, ("x",), datetime.date(2020, 1, 1), b"\n"],
    ids=["null", "list", "map", "tuple", "yaml-date", "bytes"],
)
def test_a_value_that_is_not_text_or_a_number_is_shown_as_its_repr(value):
    """A YAML date, list or map in a config file is shown as Python writes it, so the user
    sees it was read as a date or a list, not as the text they typed."""
    assert shown(value) == expected_text(repr(value))


def test_text_and_numbers_are_shown_as_typed_not_quoted():
    """``--backbone Foo`` is echoed as Foo, not 'Foo'; a float as Python prints it."""
    for value in ("MobileNet", "", "5", 2.5, -0.0, math.inf, math.nan, 1e-300):
        assert shown(value) == str(value)


@given(value=st.integers(2**1024, 10**400), negative=st.booleans())
def test_an_integer_too_large_for_a_float_parameter_is_refused_naming_it(value, negative):
    """YAML reads ``min_accuracy: 1e400`` written without a dot as an int that no float
    holds: refused naming the parameter and the value as shown everywhere else."""
    number = -value if negative else value
    with pytest.raises(InputError) as error:
        parameters.typed("min_accuracy", number)
    assert str(error.value) == f"min_accuracy {shown(number)}: too large for a float"
    assert "hex digits>" in str(error.value)


# preflight: what run resolves and checks before any step -------------------------------


def run_params(**changes) -> dict:
    return {**settings.defaults(), "data": "d", "registry": "reg", **changes}


def test_without_data_the_demo_shapes_are_written_once_under_the_pipeline_root(
    tmp_path, monkeypatch
):
    """No --data: the demo shapes, at <pipeline root>/demo-data made absolute (the steps run
    elsewhere); written the first time, then reused as they are (a second run does not
    rewrite them, so their bytes, and the split, stay the same). (The real generator, at
    two images a class to keep this fast.)"""
    written = []

    def two_a_class(out_dir: str) -> list:
        written.append(out_dir)
        return generate(out_dir, per_class=2)

    monkeypatch.setattr(demo_data, "generate", two_a_class)
    monkeypatch.chdir(tmp_path)
    given = run_params(data=None)
    params = preflight.resolve_local(given, "root")
    demo = tmp_path / "root" / "demo-data"
    assert params["data"] == str(demo) and written == [str(demo)]
    assert given["data"] is None  # the caller's dict kept
    images = sorted(p.relative_to(demo).as_posix() for p in demo.rglob("*.png"))
    assert {i.split("/")[0] for i in images} == {"circles", "squares", "triangles"}
    assert len(images) == 6
    again = preflight.resolve_local(given, str(tmp_path / "root"))
    assert again["data"] == str(demo) and written == [str(demo)]  # reused, not rewritten


def test_local_paths_are_made_absolute_and_uris_and_weight_names_kept(tmp_path, monkeypatch):
    """data, registry and a weights file are resolved from the current folder; gs:// URIs
    and the weights names imagenet, none and auto are passed on as given; nothing else
    changes."""
    monkeypatch.chdir(tmp_path)
    local = run_params(data="data", registry="./reg/../reg2", weights="w/notop.h5")
    resolved = preflight.resolve_local(local, "root")
    assert (resolved["data"], resolved["registry"], resolved["weights"]) == (
        str(tmp_path / "data"),
        str(tmp_path / "reg2"),
        str(tmp_path / "w" / "notop.h5"),
    )
    assert {k: v for k, v in resolved.items() if k not in ("data", "registry", "weights")} == {
        k: v for k, v in local.items() if k not in ("data", "registry", "weights")
    }
    assert local["data"] == "data"  # the caller's dict kept
    remote = run_params(data="gs://b/data", registry="gs://b/reg", weights="gs://b/w.h5")
    assert preflight.resolve_local(remote, "root") == remote
    for name in ("imagenet", "none", "auto"):
        assert preflight.resolve_local(run_params(weights=name), "root")["weights"] == name
    assert not (tmp_path / "root").exists()  # data was given: no demo written


def test_check_inputs_says_how_many_images_of_which_classes(demo_data, tmp_path):
    params = run_params(data=str(demo_data), registry=str(tmp_path / "reg"), weights="none")
    found = preflight.check_inputs(params)
    count = len(list(demo_data.rglob("*.png")))
    classes = ["circles", "squares", "triangles"]
    assert found == f"data: {demo_data}: {count} images, classes {classes}"


def test_check_inputs_holds_the_data_to_max_image_pixels(demo_data, tmp_path):
    """--max-image-pixels reaches the data check: the demo's largest image passes at exactly
    its pixel count and is refused, named with its size, one pixel below it."""
    largest = max(Image.open(p).size for p in demo_data.rglob("*.png"))
    pixels = largest[0] * largest[1]
    params = run_params(data=str(demo_data), registry=str(tmp_path / "reg"), weights="none")
    preflight.check_inputs({**params, "max_image_pixels": pixels})
    with pytest.raises(InputError) as error:
        preflight.check_inputs({**params, "max_image_pixels": pixels - 1})
    assert f"{largest[0]}x{largest[1]} pixels, more than max_image_pixels {pixels - 1}" in str(
        error.value
    )


# check: the refusals a user reads ----------------------------------------------------------

CHOICES = f"choices: {', '.join(settings.BACKBONES)}"


def check_params(**changes) -> dict:
    return run_params(**{"backbone": "MobileNet", "weights": "none", "image_size": 32, **changes})


@given(
    backbone=st.one_of(
        st.sampled_from(settings.BACKBONES).map(str.lower),
        st.sampled_from(settings.BACKBONES).map(lambda b: b[:-1]),
        st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=16),
    ).filter(lambda b: b not in settings.BACKBONES)
)
@example(backbone="EfficientNetB")  # eight close names: three are offered
@example(backbone="resnet50")  # two
@example(backbone="zzz")  # none
def test_an_unknown_backbone_gets_at_most_three_suggestions_then_every_choice(backbone):
    """The one line: the value, why, up to three real backbones joined by 'or' (none
    offered when none is close, not an empty 'did you mean ?'), then all the choices."""
    with pytest.raises(InputError) as error:
        parameters.check(check_params(backbone=backbone))
    message = str(error.value)
    head = f"--backbone {shown(backbone)}: not a keras.applications model; "
    assert message.startswith(head) and message.endswith(CHOICES)
    hint = message[len(head) : -len(CHOICES)]
    if hint:
        assert hint.startswith("did you mean ") and hint.endswith("? ")
        names = hint[len("did you mean ") : -2].split(" or ")
        assert 1 <= len(names) <= 3 and set(names) <= set(settings.BACKBONES), hint
    if backbone.lower() in {b.lower() for b in settings.BACKBONES}:  # a case slip
        assert hint and any(b.lower() == backbone.lower() for b in names), hint
    if backbone == "EfficientNetB":
        assert len(names) == 3 and all(n.startswith("EfficientNetB") for n in names)


@pytest.mark.parametrize(
    "train, val", [(0.5, 0.5), (0.1, 0.9), (0.99, 0.01), (0.6, 0.4), (0.7, 0.6)]
)
def test_fractions_that_leave_no_test_images_are_refused(train, val):
    """train + val = 1 leaves the test split empty: refused like a sum above 1, naming both
    values; a sum a hundredth below 1 is taken."""
    with pytest.raises(InputError) as error:
        parameters.check(check_params(train_fraction=train, val_fraction=val))
    assert str(error.value).startswith(
        f"--train-fraction {train} and --val-fraction {val}: they share the non-test part"
    )
    below = round(1 - train - 0.01, 2)
    parameters.check(check_params(train_fraction=train, val_fraction=min(below, 0.9)))


@given(
    value=st.text(max_size=12).filter(lambda v: v not in settings.BY_NAME["verify_export"].choices)
)
@example(value="Hash")
@example(value="a\nb")
def test_an_unknown_verify_export_is_refused_naming_it_and_the_choices(value):
    with pytest.raises(InputError) as error:
        parameters.check(check_params(verify_export=value))
    assert str(error.value) == f"--verify-export {shown(value)}: one of hash, reload"


WEIGHTS_REPAIR = (
    "not one of imagenet, none, auto, and no such file; or give a local or gs:// weights file "
    "of the backbone without its top"
)


def test_weights_are_a_name_a_gs_uri_or_an_existing_local_file(tmp_path):
    """A gs:// URI is taken here (preflight then checks the object exists); a local path
    only if it is a file; anything else refused with the names, and what else to give."""
    for weights in ("imagenet", "none", "auto", "gs://bucket/w/notop.h5"):
        parameters.check(check_params(weights=weights))
    (tmp_path / "notop.h5").write_bytes(b"x")
    parameters.check(check_params(weights=str(tmp_path / "notop.h5")))
    for weights in (str(tmp_path), str(tmp_path / "missing.h5"), "ImageNet"):
        with pytest.raises(InputError) as error:
            parameters.check(check_params(weights=weights))
        assert str(error.value) == f"--weights {shown(weights)}: {WEIGHTS_REPAIR}"
    with pytest.raises(InputError) as error:  # not a local path: a URI spelled wrong
        parameters.check(check_params(weights="GS://bucket/w.h5"))
    assert (
        str(error.value)
        == "--weights GS://bucket/w.h5: a malformed gs:// URI; write gs://BUCKET/PATH"
    )


def test_a_gs_backbone_cache_is_never_taken_for_a_local_file(tmp_path, monkeypatch):
    """Even where a local file or folder sits at the path a one-slash URI spells
    (``gs:/b/c``), that spelling is refused as a malformed URI; ``gs://`` is a bucket
    folder; a local file is refused, a local folder taken."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gs:" / "b").mkdir(parents=True)
    (tmp_path / "gs:" / "b" / "cache").write_bytes(b"x")
    parameters.check(check_params(backbone_cache="gs://b/cache"))
    parameters.check(check_params(backbone_cache=str(tmp_path / "gs:" / "b")))  # a folder
    for spelled in ("gs:/b", "gs:/b/cache"):
        with pytest.raises(InputError) as error:
            parameters.check(check_params(backbone_cache=spelled))
        assert str(error.value) == (
            f"--backbone-cache {spelled}: a malformed gs:// URI; write gs://BUCKET/PATH"
        )
    with pytest.raises(InputError) as error:
        parameters.check(check_params(backbone_cache="gs:/b/cache".replace("gs:/", "./gs:/")))
    assert str(error.value) == "--backbone-cache ./gs:/b/cache: a file, not a folder or gs:// URI"


def test_text_with_capital_x_is_shown_as_given():
    """Only control and line-separator characters make a value quoted; an ordinary
    letter never does (a set of special characters that grew by one would quote names)."""
    assert shown("XceptionX") == "XceptionX"


def test_every_parameter_is_of_its_type_whoever_built_the_parameters():
    """Not only a flag or a config file: a caller of the library passing text for a number
    is refused naming the parameter, before any range is compared."""
    with pytest.raises(InputError) as refused:
        parameters.check(check_params(epochs="3"))
    assert str(refused.value) == "epochs 3: must be integer"


LOCAL_OR_GS = "a local path or a gs://BUCKET/... URI"


@pytest.mark.parametrize(
    ("value", "empty_ok", "remote", "line"),
    [
        ("", False, True, f"--x: empty; give {LOCAL_OR_GS}"),
        (" \t", True, True, f"--x: empty; give {LOCAL_OR_GS}"),  # blank is never "off"
        ("", False, False, "--x: empty; give a local path"),
        ("gs://", False, True, "--x gs://: no bucket; write gs://BUCKET/PATH"),
        ("gs:///p", False, True, "--x gs:///p: no bucket; write gs://BUCKET/PATH"),
        ("gs:/b/p", False, True, "--x gs:/b/p: a malformed gs:// URI; write gs://BUCKET/PATH"),
        ("GS://b", False, True, "--x GS://b: a malformed gs:// URI; write gs://BUCKET/PATH"),
        ("gs:b", False, True, "--x gs:b: a malformed gs:// URI; write gs://BUCKET/PATH"),
        ("s3://b/p", False, True, f"--x s3://b/p: s3: is not supported here; give {LOCAL_OR_GS}"),
        ("a+b.c-d:/x", False, True, f"--x a+b.c-d:/x: a+b.c-d: is not supported here; give "
         f"{LOCAL_OR_GS}"),
        ("gs://b/p", False, False, "--x gs://b/p: gs: is not supported here; give a local path"),
        ("gs:b", False, False, "--x gs:b: gs: is not supported here; give a local path"),
        ("Z:/x", False, False, "--x Z:/x: Z: is not supported here; give a local path"),
    ],
)  # fmt: skip
def test_a_place_is_refused_in_its_own_words(value, empty_ok, remote, line):
    with pytest.raises(InputError) as refused:
        parameters.check_location("--x", value, empty_ok, remote)
    assert str(refused.value) == line


@pytest.mark.parametrize(
    ("value", "empty_ok", "remote"),
    [("", True, True), ("gs://b", False, True), ("gs://b/p/q", False, True),
     ("a:b", False, True), ("1:/x", False, False), ("./gs:/x", False, True),
     ("-x:/y", False, True), ("dir/", False, False)],
)  # fmt: skip
def test_a_local_path_or_a_gs_uri_is_taken(value, empty_ok, remote):
    """A colon in a local name is no scheme unless it has a scheme's shape (a letter, then
    letters, digits, +, . or -, then :/)."""
    parameters.check_location("--x", value, empty_ok, remote)
