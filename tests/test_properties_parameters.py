"""Every pipeline parameter, given a value of every type (in a --config file or as a flag):
either the run takes it as the parameter's declared type, or refuses it in one line that
names it, exit status 2, before any step; and --dry-run refuses exactly what run does."""

import json
import math
from pathlib import Path

import pytest
import yaml
from helpers import cli, cli_here, pipeline_inputs
from hypothesis import given
from hypothesis import strategies as st

from shapes_pipeline.helpers import settings
from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.runners import parameters

INPUTS = pipeline_inputs()
DEFAULTS = {name: spec.default for name, spec in INPUTS.items()}
KIND = {name: spec.type for name, spec in INPUTS.items()}  # String, Integer, Float, Boolean
PYTHON = {"String": str, "Integer": int, "Float": float, "Boolean": bool}
# Valid together, so a refusal is about the parameter under test.
BASE = {"backbone": "MobileNet", "weights": "none", "image_size": 32}
# Not newlines, but what str.splitlines (and a log reader) takes as line ends.
BREAKS = ["Mobile\x0bNet", "Mobile\x85Net", "Mobile\u2028Net", "Mobile\x1eNet"]
# Checked by the data, registry and model-name checks, which name the path or name.
PATHS = ("data", "registry", "model_name")
# Checked against the data too (say, a class too small for the split): that refusal
# names the data's folder, not the parameter.
DATA_CHECKED = ("seed", "train_fraction", "val_fraction", "max_image_pixels")


def text(**kwargs) -> st.SearchStrategy[str]:
    """Any text a YAML file can hold (no lone surrogates); whitespace and unicode too."""
    alphabet = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
    return st.text(alphabet, **kwargs)


def values(name: str) -> st.SearchStrategy:
    """Values of every type; some valid ones (the default, a range's ends) among them."""
    valid = [v for v in (DEFAULTS[name], *parameters.RANGES.get(name, ())) if v is not None]
    scalars = st.one_of(
        st.integers(),
        st.sampled_from([2**31, -(2**63), 10**30, 10**400, -(10**400)]),
        st.floats(),  # nan, +-inf, -0.0, huge and tiny included
        st.booleans(),
        text(max_size=20),
        st.sampled_from(
            ["", " ", "\t\n", "true", "false", "5", "2.5", "1e3", "ünï©ødé", "…", *BREAKS]
        ),
        st.none(),
    )
    return st.one_of(
        st.sampled_from(valid) if valid else st.nothing(),
        scalars,
        st.lists(scalars, max_size=3),
        st.dictionaries(text(max_size=5), scalars, max_size=2),
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, demo_data) -> Path:
    folder = tmp_path_factory.mktemp("config")
    (folder / "base.yaml").write_text(yaml.safe_dump(BASE))
    return folder


def dry_run(workdir: Path, demo_data: Path, *arguments: str, given: tuple = ()):
    """``run --dry-run`` in this process, with --data and --registry unless ``given``."""
    flags = [] if "data" in given else ["--data", str(demo_data)]
    flags += [] if "registry" in given else ["--registry", "reg"]
    return cli_here("run", "--dry-run", *flags, *arguments, cwd=workdir)


def assert_used_or_refused(done, name: str, value) -> None:
    """Accepted: the value the run would use has the declared type (and, but for paths
    made absolute, is the value given). Refused: exit 2, one line naming the parameter."""
    if done.returncode == 0:
        used = json.loads(done.stdout[done.stdout.index("{") :])[name]
        assert type(used) is PYTHON[KIND[name]], (name, value, used)
        if name not in ("data", "registry", "weights"):
            assert used == value, (name, value, used)
        return
    assert done.returncode == 2, (name, value, done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    (line,) = [x for x in lines if "error: " in x]  # argparse's usage lines aside
    assert lines[-1] == line and "Traceback" not in done.stderr, done.stderr
    named = (name, parameters.option(name))
    about_data = name in DATA_CHECKED and "error: /" in line and "image" in line
    assert any(n in line for n in named) or name in PATHS or about_data, (name, value, line)
    # the backbone's message lists the choices; besides them, a line is short
    choices = ", ".join(settings.BACKBONES)
    assert len(line.replace(choices, "")) <= 300, (name, line)


@given(st.sampled_from(sorted(INPUTS)).flatmap(lambda n: st.tuples(st.just(n), values(n))))
def test_a_config_value_of_any_type_is_used_as_its_type_or_refused_in_one_line(
    workdir, demo_data, case
):
    """YAML gives ints, floats (nan, inf, -0.0), bools, strings, nulls, lists and maps: a
    bool or 2.5 for an int parameter, "false" for a bool one, 5 for a name must not pass
    --dry-run (and then fail, or silently mean something else, in a step)."""
    name, value = case
    config = {**BASE, name: value}
    (workdir / "c.yaml").write_text(yaml.safe_dump(config))
    done = dry_run(workdir, demo_data, "--config", "c.yaml", given=(name,))
    assert_used_or_refused(done, name, value)
    assert sorted(p.name for p in workdir.iterdir()) == ["base.yaml", "c.yaml"]  # nothing else


@given(
    st.sampled_from(sorted(n for n in INPUTS if KIND[n] != "Boolean")).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.one_of(
                text(max_size=12),
                st.sampled_from(
                    ["nan", "-inf", "-0.0", "1e400", " 7 ", "0x10", "1_000", "٣", *BREAKS]
                ),
                st.sampled_from([str(v) for v in parameters.RANGES.get(n, ())] or [""]),
            ),
        )
    )
)
def test_a_flag_value_is_parsed_to_its_type_or_refused_in_one_line(workdir, demo_data, case):
    """Flags are text; argparse converts them by the default's type. Whatever the text,
    the run uses a value of the declared type or refuses it in one error line."""
    name, raw = case
    done = dry_run(
        workdir, demo_data, "--config", "base.yaml", f"{parameters.option(name)}={raw}",
        given=(name,),
    )  # fmt: skip
    assert_used_or_refused(done, name, PYTHON[KIND[name]](raw) if done.returncode == 0 else raw)


@pytest.mark.parametrize("text", BREAKS)
@pytest.mark.parametrize("name", sorted(n for n in INPUTS if KIND[n] == "String"))
def test_a_line_break_in_a_text_value_never_breaks_the_error_line(workdir, demo_data, name, text):
    """Vertical tab, NEL, U+2028, record separator: not newlines, but line ends to
    str.splitlines and many log readers. A refusal echoing one must escape it."""
    flag = f"{parameters.option(name)}={text}"
    done = dry_run(workdir, demo_data, "--config", "base.yaml", flag, given=(name,))
    assert_used_or_refused(done, name, text)


def edges(name: str) -> tuple[list, list]:
    """(values just inside the range: its ends; values just outside it)."""
    low, high = parameters.RANGES[name]
    if KIND[name] == "Integer":
        return [low, high], [low - 1, high + 1]
    return [float(low), float(high)], [
        math.nextafter(low, -math.inf),
        math.nextafter(high, math.inf),
    ]


def valid_params(**changes) -> dict:
    return {**DEFAULTS, "data": "d", "registry": "r", **BASE, **changes}


@pytest.mark.parametrize("name", sorted(parameters.RANGES))
def test_each_range_takes_its_ends_and_refuses_the_next_value_out(name):
    """Both ends are allowed (inclusive), the next float or int beyond either is not, and
    the refusal names the option and the value."""
    # the two fractions share the non-test part: the other one at its least
    other = {"train_fraction": {"val_fraction": 0.0}, "val_fraction": {"train_fraction": 0.01}}
    inside, outside = edges(name)
    for value in inside:
        parameters.check(valid_params(**other.get(name, {}), **{name: value}))
        assert parameters.typed(name, value) == value
    for value in outside:
        with pytest.raises(InputError) as refused:
            parameters.check(valid_params(**other.get(name, {}), **{name: value}))
        assert str(refused.value).startswith(f"{parameters.option(name)} {value}: must be")


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_typed_keeps_the_declared_type_and_refuses_the_others(name):
    """bool is an int to Python, and 1 == 1.0 == True: each type is told apart exactly."""
    samples = [True, 7, 2.5, "7", None, [7], {"a": 7}]
    kind = PYTHON[KIND[name]]
    for value in samples:
        fits = type(value) is kind or (kind is float and type(value) is int)
        if fits:
            used = parameters.typed(name, value)
            assert type(used) is kind and used == value
        else:
            with pytest.raises(InputError, match=f"^{name} "):
                parameters.typed(name, value)


# Refused by run: (config, what the one line says). Each is refused before any step.
REFUSED = {
    "float-for-int": ({"epochs": 2.5}, "epochs 2.5: must be integer"),
    "bool-for-int": ({"epochs": True}, "epochs True: must be integer"),
    "string-for-bool": ({"augment": "false"}, "augment false: must be boolean"),
    "int-for-name": ({"backbone": 5}, "backbone 5: must be string"),
    "null-for-path": ({"registry": None}, "registry None: must be string"),
    "out-of-range": ({"min_accuracy": 1.5}, "--min-accuracy 1.5: must be between 0.0 and 1.0"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_dry_run_refuses_exactly_what_run_refuses(workdir, demo_data, case):
    """The same exit status and the same one line, and nothing written by either."""
    config, message = REFUSED[case]
    (workdir / "c.yaml").write_text(yaml.safe_dump({**BASE, **config}))
    dry = dry_run(workdir, demo_data, "--config", "c.yaml")
    assert dry.returncode == 2 and message in dry.stderr, dry.stderr
    # only now, as dry-run refused it: a run that took it would train
    flags = ["--data", str(demo_data), "--registry", "reg", "--config", "c.yaml"]
    done = cli_here("run", *flags, cwd=workdir)
    assert (done.returncode, done.stderr) == (dry.returncode, dry.stderr)
    assert sorted(p.name for p in workdir.iterdir()) == ["base.yaml", "c.yaml"]


@pytest.mark.slow
def test_a_new_process_refuses_a_wrong_typed_config_as_dry_run_does(workdir, demo_data):
    """As a user runs it: two cases in fresh processes, run and --dry-run alike."""
    flags = ["--data", str(demo_data), "--registry", "reg", "--config", "c.yaml"]
    for config, message in (REFUSED["bool-for-int"], REFUSED["int-for-name"]):
        (workdir / "c.yaml").write_text(yaml.safe_dump({**BASE, **config}))
        dry = cli("run", "--dry-run", *flags, cwd=workdir)
        assert dry.returncode == 2 and message in dry.stderr, dry.stderr
        assert dry.stderr.count("\n") == 1 and dry.stderr.startswith("error: ")
        done = cli("run", *flags, cwd=workdir)
        assert (done.returncode, done.stderr) == (dry.returncode, dry.stderr)
