"""Generated hostile input for every command (issue 32): Hypothesis draws the arguments,
option values of every type (numbers, booleans, strings, URIs, choices, files) and
``--config`` files (wrong types, nested and unknown keys, bytes that are not UTF-8, huge
files, special files). Each case ends one of two ways: success, or one line on stderr
(at most 300 characters, no traceback, no "internal error") with exit 1 or 2. Every case
leaves the registry as it was, byte for byte, and finishes within ``CASE_SECONDS``.

The commands run in this process (``helpers.cli_here``); ``run`` with ``--dry-run``, and a
case that ``--dry-run`` refuses is run again without it, which must refuse it with the
same line before any work. ``submit`` and ``schedule`` talk to a closed port, so a case
that passes every check ends in the one line of an unreachable host.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import yaml
from helpers import cli_here, registry_with_a_version, tree_bytes
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shapes_pipeline.helpers import settings as table

CASE_SECONDS = 60
LINE_LIMIT = 300
STRANGE = ["", " ", "\t", "-", "--", "~", ".", "..", "\x00", "a\nb", "\u2028", "é", "x" * 3000]
URIS = ["s3://b/x", "gs:/b/x", "gs://", "gs:///x", "GS://b/x", "http://h/x", "file:///tmp",
        "gs:b", "hdfs://n/x", "c:/x", "gs://b/x", "gs://b b/x"]  # fmt: skip
NUMBERS = ["0", "-1", "1e400", "-1e400", "nan", "inf", "0x10", "1_000", "٣", "2147483648",
           "9" * 5000, "1.5", "-0.0", "true", ""]  # fmt: skip


def texts(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_categories=["Cs"]), max_size=max_size)


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(texts(), st.sampled_from(STRANGE + URIS + NUMBERS))


@pytest.fixture(scope="module")
def place(tmp_path_factory, demo_data) -> dict:
    """A working folder with every kind of file a path may name, a registry with one
    production version, and a closed port."""
    root = tmp_path_factory.mktemp("hostile")
    registry_with_a_version(root / "reg")
    (root / "folder").mkdir()
    (root / "file.txt").write_text("text\n")
    (root / "latin1.yaml").write_bytes(b"epochs: 3\nmodel_name: caf\xe9\n")
    (root / "huge.yaml").write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    os.mkfifo(root / "fifo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    files = ["folder", "file.txt", "latin1.yaml", "huge.yaml", "fifo", "/dev/zero", "/dev/null",
             "missing.yaml", str(root / "reg"), "/proc/self/mem", "reg/shapes-classifier/LATEST",
             ]  # fmt: skip
    return {"root": root, "data": str(demo_data), "files": files,
            "host": f"http://127.0.0.1:{port}"}  # fmt: skip


def option_values(p: table.Parameter, files: list[str]) -> st.SearchStrategy[list[str]]:
    """Flags for pipeline parameter ``p`` by its type: a number's text, a boolean's
    spellings, a string, a place, a choice."""
    if p.kind is bool:
        return st.sampled_from([[p.option], [f"--no-{p.option[2:]}"], [f"{p.option}=yes"]])
    if p.kind in (int, float):
        low, high = p.range or (0, 1)
        near = st.sampled_from([str(low), str(high), str(low - 1), str(high + 1)])
        number = st.one_of(st.integers(), st.floats()).map(str)
        return st.one_of(near, number, st.sampled_from(NUMBERS)).map(lambda v: [f"{p.option}={v}"])
    if p.choices:
        return st.one_of(st.sampled_from(p.choices), hostile_text()).map(
            lambda v: [f"{p.option}={v}"]
        )
    return st.one_of(hostile_text(), st.sampled_from(files)).map(lambda v: [f"{p.option}={v}"])


def config_files() -> st.SearchStrategy[bytes]:
    """A --config file's bytes: YAML of any keys and values (nested, wrong types, unknown
    keys), JSON, or bytes that are not text."""
    names = st.one_of(st.sampled_from([p.name for p in table.PARAMETERS]), texts(12))
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts(20))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(texts(5), inner, max_size=3), max_leaves=6)  # fmt: skip
    mappings = st.dictionaries(names, values, max_size=4)
    as_yaml = st.one_of(mappings, values).map(lambda v: yaml.safe_dump(v).encode())
    return st.one_of(as_yaml, st.binary(max_size=200), texts(200).map(str.encode))


def common(place: dict, draw) -> list[str]:
    """Zero to three hostile pipeline options, and maybe a hostile --config file."""
    chosen = draw(st.lists(st.sampled_from(table.PARAMETERS), max_size=3, unique_by=id))
    flags = [f for p in chosen for f in draw(option_values(p, place["files"]))]
    config = draw(st.one_of(st.none(), config_files(), st.sampled_from(place["files"])))
    if isinstance(config, bytes):
        (place["root"] / "drawn.yaml").write_bytes(config)
        config = "drawn.yaml"
    return flags + (["--config", config] if config is not None else [])


@st.composite
def run_args(draw, place: dict) -> list[str]:
    given_data = draw(st.booleans())
    data = ["--data", place["data"]] if not given_data else []
    return ["run", "--registry", "reg", *data, *common(place, draw)]


@st.composite
def cluster_args(draw, place: dict) -> list[str]:
    command = draw(st.sampled_from(["submit", "schedule"]))
    cron = ["--cron", draw(st.one_of(st.just("0 3 * * *"), hostile_text()))]
    host = draw(st.one_of(st.just(place["host"]), hostile_text()))
    base = ["--data", "gs://shapes-data/raw", "--registry", "gs://shapes-models/reg"]
    seconds = st.lists(st.tuples(st.sampled_from(["--connect-timeout", "--timeout",
                       "--poll-seconds"]), st.sampled_from(["0", "-1", "nan", "inf", "0.5"])),
                       max_size=2)  # fmt: skip
    waits = [
        f"{k}={v}" for k, v in draw(seconds) if command == "submit" or k == "--connect-timeout"
    ]
    return [command, "--host", host, *base, *(cron if command == "schedule" else []),
            *waits, *common(place, draw)]  # fmt: skip


@st.composite
def other_args(draw, place: dict) -> list[str]:
    """predict, models, promote, compile and generate, with places and values of every
    kind where each takes one."""
    where = st.one_of(st.just("reg"), hostile_text(), st.sampled_from(place["files"]))
    output = st.sampled_from(["json", "table", "yaml", ""])
    command = draw(st.sampled_from(["predict", "models", "promote", "compile", "generate"]))
    if command == "predict":
        images = draw(st.lists(st.one_of(hostile_text(), st.sampled_from(place["files"])),
                               min_size=1, max_size=3))  # fmt: skip
        return ["predict", "--model", draw(where), "--output", draw(output), "--", *images]
    if command == "models":
        name = draw(st.one_of(st.just("shapes-classifier"), hostile_text()))
        return ["models", "--registry", draw(where), "--output", draw(output), "--model-name", name]
    if command == "promote":
        version = draw(st.one_of(st.just("20260101T000000Z-0123abcd"), hostile_text()))
        return ["promote", "--registry", draw(where), "--version", version]
    if command == "compile":
        count = st.sampled_from(["0", "1", "-1", "2", "1e9", "x", "99999999999"])
        return ["compile", "-o", draw(st.one_of(st.just("p.yaml"), hostile_text(),
                st.sampled_from(place["files"]))), "--gpus", draw(count),
                "--extract-parallelism", draw(count),
                "--gpu-node-selector", draw(st.one_of(st.just("a=b"), hostile_text()))]  # fmt: skip
    per_class = st.sampled_from(["1", "0", "-3", "100001", "x", "1e3", "9" * 400])
    return ["generate", "--out", draw(st.one_of(st.just("gen"), hostile_text(),
            st.sampled_from(place["files"]))), "--per-class", draw(per_class)]  # fmt: skip


class Hung(Exception):
    pass


def within_time(args: list[str], cwd: Path):
    def alarm(*_) -> None:
        raise Hung(f"no answer in {CASE_SECONDS} s: {args!r}"[:500])

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_SECONDS)
    try:
        return cli_here(*args, cwd=cwd)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_success_or_one_line(done, args: list[str]) -> None:
    if done.returncode == 0:
        return
    lines = done.stderr.splitlines()
    assert done.returncode in (1, 2), (args, done.returncode, done.stderr[-500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr[-1000:])
    assert len(lines[0]) <= LINE_LIMIT, (args, lines[0])
    assert "Traceback" not in done.stderr and "internal error" not in lines[0], (args, lines[0])


def check_case(place: dict, args: list[str]):
    event(args[0])  # cases per command: pytest --hypothesis-show-statistics
    before = tree_bytes(place["root"] / "reg")
    done = within_time(args, place["root"])
    assert_success_or_one_line(done, args)
    if not (args[0] == "promote" and done.returncode == 0):  # a promotion changes it
        assert tree_bytes(place["root"] / "reg") == before, args
    return done


CASES = settings(suppress_health_check=list(HealthCheck), deadline=None)


@CASES
@given(data=st.data())
def test_run_dry_run_and_run_refuse_alike(place, data):
    args = data.draw(run_args(place))
    dry = check_case(place, [*args, "--dry-run"])
    if dry.returncode != 0:
        real = check_case(place, args)
        assert (real.returncode, real.stderr) == (dry.returncode, dry.stderr), args
        runs = place["root"] / "runs"  # the demo data aside (a run without --data)
        assert not runs.exists() or os.listdir(runs) == ["demo-data"], args


@CASES
@given(data=st.data())
def test_submit_and_schedule(place, data):
    args = data.draw(cluster_args(place))
    done = check_case(place, args)
    assert done.returncode != 0, args  # the host is a closed port


@CASES
@given(data=st.data())
def test_predict_models_promote_compile_generate(place, data):
    check_case(place, data.draw(other_args(place)))
