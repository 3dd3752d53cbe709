"""Every option reaches what uses it. Each pipeline parameter, given as a flag or in a
--config file, arrives unchanged and of its type in the run's resolved parameters and in the
run that submit and schedule send to Kubeflow; and every pair of on/off or choice options
that ``run`` checks before any step is taken together. That each step's input is wired to
the pipeline parameter of its name is in test_options_wiring.py.

The values come from the parameter table (``shapes_pipeline.runners.parameters``), so a
parameter added later is covered, or named by the first test until it is given a kind of
value here."""

import argparse
import itertools
import json
from pathlib import Path

import pytest
import yaml
from helpers import cli_here, pipeline_inputs
from hypothesis import given
from hypothesis import strategies as st
from kfp_api import API, only

from shapes_pipeline.helpers import settings
from shapes_pipeline.runners import cli, parameters

INPUTS = pipeline_inputs()
DEFAULTS = {name: spec.default for name, spec in INPUTS.items()}
KIND = {name: spec.type for name, spec in INPUTS.items()}  # String, Integer, Float, Boolean
PYTHON = {"String": str, "Integer": int, "Float": float, "Boolean": bool}
CHOICES = {
    "backbone": settings.BACKBONES,
    "weights": list(settings.WEIGHTS),
    "verify_export": list(settings.BY_NAME["verify_export"].choices),
}
# Text parameters without a list of choices: paths, URIs and names.
FREE_TEXT = ("data", "registry", "backbone_cache", "model_name")
# Checked against the data too: 12 images a class leave every split some at these.
FRACTIONS = {"train_fraction": 0.7, "val_fraction": 0.2}


def run_parser() -> argparse.ArgumentParser:
    return cli.parser()._subparsers._group_actions[0].choices["run"]


def run_defaults() -> dict:
    return cli.pipeline_params(cli.parse(cli.parser(), ["run"]))


def chosen(paths: dict[str, str]) -> dict:
    """A valid value for every parameter: none is its default (the pipeline's or run's), no
    two of one type are equal. So a flag dropped leaves a default, and two swapped each
    get the other's value: either shows. ``paths``: the free-text values."""
    numeric = [name for name in INPUTS if name in parameters.RANGES]
    local = run_defaults()
    values = {}
    for name, kind in KIND.items():
        if kind == "Boolean":
            values[name] = not DEFAULTS[name]
        elif name in FRACTIONS:
            values[name] = FRACTIONS[name]
        elif name in parameters.RANGES:
            low, high = parameters.RANGES[name]
            share = 0.1 + 0.35 * numeric.index(name) / len(numeric)  # image_size fits all
            value = low + (high - low) * share
            values[name] = round(value) if kind == "Integer" else float(value)
        elif name in CHOICES:
            values[name] = next(c for c in CHOICES[name] if c not in (DEFAULTS[name], local[name]))
        elif name in FREE_TEXT:
            values[name] = paths[name]
        else:
            raise AssertionError(f"{name}: no value for it here; add it to CHOICES or FREE_TEXT")
    parameters.check(values)
    for kind in PYTHON:
        same_kind = [v for name, v in values.items() if KIND[name] == kind and kind != "Boolean"]
        assert len(set(same_kind)) == len(same_kind), f"two {kind} values alike: {same_kind}"
    assert not {n for n, v in values.items() if v in (DEFAULTS[n], local[n])}
    return values


def flag(name: str, value) -> str:
    if KIND[name] == "Boolean":
        return parameters.option(name if value else f"no_{name}")
    return (
        f"{parameters.option(name)}={value!r}"
        if isinstance(value, float)
        else (f"{parameters.option(name)}={value}")
    )


def flags(values: dict) -> list[str]:
    return [flag(name, value) for name, value in values.items()]


def config_file(folder: Path, values: dict, form: str) -> str:
    path = folder / f"run.{form}"
    path.write_text(json.dumps(values) if form == "json" else yaml.safe_dump(values))
    return str(path)


def differences(got: dict, values: dict) -> dict:
    """Each parameter whose value or type did not arrive as given: (arrived, given)."""
    return {
        name: (got.get(name, "<missing>"), value)
        for name, value in values.items()
        if name not in got or type(got[name]) is not PYTHON[KIND[name]] or got[name] != value
    }


def test_every_parameter_has_a_kind_of_value_here():
    """A parameter added later gets values in every test below, or fails here by name."""
    unknown = {
        name
        for name, kind in KIND.items()
        if kind != "Boolean"
        and name not in parameters.RANGES
        and name not in CHOICES
        and name not in FREE_TEXT
    }
    assert not unknown, f"add {sorted(unknown)} to CHOICES or FREE_TEXT"
    assert set(parameters.RANGES) | set(CHOICES) | set(FREE_TEXT) <= set(INPUTS)
    assert {KIND[name] for name in parameters.RANGES} <= {"Integer", "Float"}


# ------------------------------------------------ 1. every value reaches the run's arguments


def local_paths(demo_data: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "data": str(demo_data),
        "registry": str(tmp_path / "another-registry"),
        "backbone_cache": str(tmp_path / "backbones"),
        "model_name": "another-model",
    }


@pytest.mark.parametrize("given_as", ["flags", "yaml", "json"])
def test_every_parameter_given_reaches_the_runs_resolved_parameters(demo_data, tmp_path, given_as):
    """``run --dry-run`` prints the parameters the run hands the pipeline: each is the value
    given, of its type, whether every one is a flag or every one is in a config file."""
    values = chosen(local_paths(demo_data, tmp_path))
    if given_as == "flags":
        arguments = flags(values)
    else:
        arguments = ["--config", config_file(tmp_path, values, given_as)]
    done = cli_here("run", *arguments, "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout[done.stdout.index("{") :])
    assert set(resolved) == set(INPUTS)
    assert not differences(resolved, values)


def test_each_flag_and_config_key_alone_changes_only_its_parameter(tmp_path):
    """One parameter at a time: the parameters built differ from run's defaults in that one
    and no other (a flag that also set another parameter, or set the wrong one, shows),
    but for --data, which also names the model (after its folder) unless it is named."""
    values = chosen(local_paths(tmp_path / "data", tmp_path))
    base = run_defaults()
    for name, value in values.items():
        by_flag = cli.pipeline_params(cli.parse(cli.parser(), ["run", flag(name, value)]))
        path = config_file(tmp_path, {name: value}, "yaml")
        by_file = cli.pipeline_params(cli.parse(cli.parser(), ["run", "--config", path]))
        for got in (by_flag, by_file):
            changed = {n for n in got if got[n] != base[n]}
            named = {"model_name"} if name == "data" else set()
            assert changed == {name, *named}, (name, got)
            assert not differences(got, {name: value}), (name, got)
            if named:
                assert got["model_name"] == parameters.model_name_from(value)


def valid_values(name: str) -> st.SearchStrategy:
    """Any value the parameter's checks take (cross-checks aside): its range, choices or
    any one-line text."""
    kind = KIND[name]
    if kind == "Boolean":
        return st.booleans()
    if name in parameters.RANGES:
        low, high = parameters.RANGES[name]
        if kind == "Integer":
            return st.integers(low, high)
        return st.floats(low, high, allow_nan=False)
    if name in CHOICES:
        return st.sampled_from(CHOICES[name])
    alphabet = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
    return st.text(alphabet, max_size=12)


@given(
    values=st.fixed_dictionaries({name: valid_values(name) for name in INPUTS}),
    given_as=st.sampled_from(["flags", "yaml", "json"]),
)
def test_any_valid_values_arrive_as_given_and_typed(tmp_path_factory, values, given_as):
    """Every parameter at once, any values in their ranges (floats of every magnitude,
    text of any characters), as flags or as a YAML or JSON file as Python writes one:
    the parameters built for the pipeline are exactly those values, of their types."""
    if given_as == "flags":
        args = cli.parse(cli.parser(), ["run", *flags(values)])
    else:
        path = config_file(tmp_path_factory.mktemp("config"), values, given_as)
        args = cli.parse(cli.parser(), ["run", "--config", path])
    assert not differences(cli.pipeline_params(args), values)


CLUSTER_PATHS = {
    "data": "gs://shapes-data/other-raw",
    "registry": "gs://shapes-models/other-registry",
    "backbone_cache": "gs://shapes-cache/backbones",
    "model_name": "another-model",
}


def test_a_json_config_is_read_as_json(tmp_path):
    """JSON as Python's json module writes it: 1e-05 is a number and an escaped character
    beyond the BMP is one character (PyYAML, a YAML 1.1 reader, took them for text and for
    two halves of a character)."""
    values = {"fine_tune_lr": 1e-05, "shard_mb": 1e3, "model_name": "model-\U0001f600"}
    path = config_file(tmp_path, values, "json")
    assert "1e-05" in Path(path).read_text() and "\\ud83d" in Path(path).read_text()
    got = cli.pipeline_params(cli.parse(cli.parser(), ["run", "--config", path]))
    assert not differences(got, values)


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_a_required_parameter_may_come_from_the_config_file(tmp_path, capsys, command):
    """submit's and schedule's --data and --registry, like every parameter, may be in the
    file (they were refused as missing before the file was read); missing from both, they
    are refused by name."""
    cron = ["--cron", "0 3 * * *"] if command == "schedule" else []
    given_here = {"data": CLUSTER_PATHS["data"], "registry": CLUSTER_PATHS["registry"]}
    path = config_file(tmp_path, given_here, "yaml")
    args = cli.parse(cli.parser(), [command, "--host", "h", "--config", path, *cron])
    assert not differences(cli.pipeline_params(args), given_here)
    only_data = config_file(tmp_path, {"data": CLUSTER_PATHS["data"]}, "yaml")
    for more, missing in (([], "--data, --registry"), (["--config", only_data], "--registry")):
        with pytest.raises(SystemExit) as refused:
            cli.parse(cli.parser(), [command, "--host", "h", *more, *cron])
        assert refused.value.code == 2
        (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert f"the following arguments are required: {missing};" in line, line


# ------------------------------------- 1. ... and the run that submit and schedule send


@pytest.mark.parametrize("given_as", ["flags", "json"])
@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_every_parameter_given_reaches_the_run_sent_to_kubeflow(api, tmp_path, command, given_as):
    """What kfp's client sends to the KFP API (a recording server here): the run's
    runtime parameters are the values given, of their types."""
    values = chosen(CLUSTER_PATHS)
    if given_as == "flags":
        arguments = flags(values)
    else:
        arguments = ["--config", config_file(tmp_path, values, given_as)]
    extra = ["--cron", "0 3 * * *"] if command == "schedule" else []
    done = cli_here(command, "--host", api.url, "--token", "t", *arguments, *extra, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = f"{API}/runs" if command == "submit" else f"{API}/recurringruns"
    sent = only(api, "POST", path)["body"]["runtime_config"]["parameters"]
    assert set(sent) == set(INPUTS)
    assert not differences(sent, values)


# --------------------------------------------- 3. every pair of on/off or choice options


def pair_options() -> dict[str, list]:
    """Option -> its values: run's on/off and choice options, the pipeline's and run's own
    (besides --dry-run, which every case needs). Backbones: the default, one with no
    smallest size of its own, and each that has one (the only way a backbone's check
    differs)."""
    options = {}
    on_off = (argparse._StoreTrueAction, argparse._CountAction)
    for action in run_parser()._actions:
        name = action.dest
        if name in INPUTS and KIND[name] == "Boolean":
            options[name] = [False, True]
        elif name not in INPUTS and isinstance(action, on_off) and name != "dry_run":
            options[name] = [0, 1]  # times given
    plain = next(b for b in settings.BACKBONES if b not in settings.MIN_IMAGE_SIZE)
    options["backbone"] = [DEFAULTS["backbone"], plain, *settings.MIN_IMAGE_SIZE]
    # a weights file is loaded into the backbone before any step (test_first_run.py)
    options["weights"] = list(settings.WEIGHTS)
    options["verify_export"] = list(settings.BY_NAME["verify_export"].choices)
    assert set(CHOICES) <= set(options)
    return options


def pair_arguments(name: str, value) -> list[str]:
    if name in INPUTS:
        return [flag(name, value)]
    return [parameters.option(name)] * int(value)


def exclusive(parser: argparse.ArgumentParser) -> set[frozenset[str]]:
    """Pairs of options argparse refuses together (a mutually exclusive group)."""
    return {
        frozenset(pair)
        for group in parser._mutually_exclusive_groups
        for pair in itertools.combinations([a.dest for a in group._group_actions], 2)
    }


def test_every_pair_of_on_off_and_choice_options_is_taken_together(demo_data, tmp_path):
    """Every two options, every two of their values, through run's checks before any step:
    either the run takes both (and both reach its parameters), or, only where argparse
    makes them exclusive, refuses in one error line naming both."""
    options = pair_options()
    refusable = exclusive(run_parser())
    base = ["--data", str(demo_data), "--registry", str(tmp_path / "reg"), "--dry-run"]
    cases = 0
    for (a, values_a), (b, values_b) in itertools.combinations(options.items(), 2):
        for value_a, value_b in itertools.product(values_a, values_b):
            given_here = {a: value_a, b: value_b}
            arguments = [*pair_arguments(a, value_a), *pair_arguments(b, value_b)]
            done = cli_here("run", *base, *arguments, cwd=tmp_path)
            cases += 1
            if done.returncode == 0:
                resolved = json.loads(done.stdout[done.stdout.index("{") :])
                pipeline_given = {n: v for n, v in given_here.items() if n in INPUTS}
                assert not differences(resolved, pipeline_given), arguments
                continue
            errors = [line for line in done.stderr.splitlines() if "error:" in line]
            assert done.returncode == 2 and len(errors) == 1, (arguments, done.stderr)
            assert frozenset(given_here) in refusable, (arguments, errors)
            for name in given_here:
                assert parameters.option(name) in errors[0], (name, errors)
    assert cases > 100


@pytest.mark.parametrize("command", ["submit", "schedule"])
def test_a_cluster_run_refuses_a_local_weights_file(tmp_path, capsys, command):
    """--weights takes a local file for run; a cluster's steps cannot read one, so submit
    and schedule refuse it before any request, as they refuse a local --data."""
    weights = tmp_path / "backbone.weights.h5"
    weights.write_bytes(b"")
    cron = ["--cron", "0 3 * * *"] if command == "schedule" else []
    paths = ["--data", CLUSTER_PATHS["data"], "--registry", CLUSTER_PATHS["registry"]]
    argv = [command, "--host", "h", *paths, "--weights", str(weights), *cron]
    with pytest.raises(SystemExit) as refused:
        cli.cluster_request(cli.parse(cli.parser(), argv))
    assert refused.value.code == 2
    assert f"--weights {weights}: a cluster's steps need a gs:// URI" in capsys.readouterr().err
