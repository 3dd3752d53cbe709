"""The command line's options and their parsing, shared by every command: one option per
pipeline parameter (from the parameter table), ``--config`` files, the places options
name, and one-line usage errors. ``cli.py`` holds the commands."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import stat
import sys
from typing import NoReturn

from shapes_pipeline.helpers import settings
from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.runners import parameters
from shapes_pipeline.runners.exits import fail


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help; the descriptions keep their lines."""


class Parser(argparse.ArgumentParser):
    """A usage mistake is one line naming it and where the options are, not the usage
    (which, with every pipeline parameter, runs to dozens of lines before the mistake)."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message}; see {self.prog} --help")


def spelled_as_options(argv: list[str]) -> list[str]:
    """``--image_size``, the parameter's own name, read as its option ``--image-size``
    (options hold no underscore); nothing after a bare ``--``."""
    if "--" in argv:
        cut = argv.index("--")
        return [*spelled_as_options(argv[:cut]), *argv[cut:]]
    return [
        a.split("=", 1)[0].replace("_", "-") + a[len(a.split("=", 1)[0]) :]
        if a.startswith("--")
        else a
        for a in argv
    ]


# ------------------------------------------------------------ options from the pipeline


def add_pipeline_options(parser: argparse.ArgumentParser, defaults: dict) -> None:
    """One option per pipeline parameter, from the parameter table. One without a default
    is required after ``--config`` is read (see :func:`parse`)."""
    required = []
    for p in settings.PARAMETERS:
        default = defaults.get(p.name, p.default)
        if p.kind is bool:
            parser.add_argument(
                p.option, action=argparse.BooleanOptionalAction, default=default, help=p.help
            )
            continue
        if default is None and p.name not in defaults:
            required.append(p.name)
        parser.add_argument(p.option, type=p.kind, default=default, help=p.help)
    parser.set_defaults(required_parameters=required)
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON file of pipeline parameters (their names as keys); flags override it",
    )


CONFIG_LIMIT = 1 << 20  # bytes: a parameter file is a few hundred


def read_config(path: str) -> dict:
    """The parameters of a YAML or JSON file, each of its parameter's type. A FIFO, a
    device or a file larger than ``CONFIG_LIMIT`` is refused before it is read (reading
    one could wait forever, or fill the memory)."""
    import yaml

    try:
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):
            with open(path, "rb") as f:
                raw = f.read(CONFIG_LIMIT + 1)
    except OSError as e:
        raise InputError(f"--config {path}: cannot read it ({e.strerror})") from e
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise InputError(f"--config {path}: {kind}; name a YAML or JSON file")
    if len(raw) > CONFIG_LIMIT:
        raise InputError(f"--config {path}: larger than {CONFIG_LIMIT} bytes; not a config")
    try:
        text = raw.decode()
        try:  # JSON read as JSON: PyYAML (YAML 1.1) takes JSON's 1e-05 for text and its
            loaded = json.loads(text)  # "\ud83d\ude00" for two halves of a character
        except json.JSONDecodeError:
            loaded = yaml.safe_load(text)
    except UnicodeDecodeError:
        raise InputError(f"--config {path}: not UTF-8 text; save it as UTF-8") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an int of over 4300 digits
        raise InputError(f"--config {path}: not YAML or JSON ({str(e).splitlines()[0]})") from e
    if not isinstance(loaded, dict):
        raise InputError(f"--config {path}: must be a mapping of parameter names to values")
    unknown = sorted(map(str, set(loaded) - set(settings.BY_NAME)))
    if unknown:
        first = parameters.shown(unknown[0])
        close = difflib.get_close_matches(first.replace("-", "_"), settings.BY_NAME, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise InputError(f"--config {path}: unknown parameter {first}{hint}{more}")
    try:
        return {name: parameters.typed(name, value) for name, value in loaded.items()}
    except InputError as e:
        raise InputError(f"--config {path}: {e}") from None


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parses twice where ``--config`` is given: its values become the defaults, so flags
    given on the command line still win, and a required parameter may be in the file."""
    argv = spelled_as_options(sys.argv[1:] if argv is None else list(argv))
    args = parse_known(parser, argv)
    if getattr(args, "config", None):
        try:
            config = read_config(args.config)
        except InputError as e:
            fail(str(e))
        args.command_parser.set_defaults(**config)
        args = parse_known(parser, argv)
    missing = [n for n in getattr(args, "required_parameters", []) if getattr(args, n) is None]
    if missing:
        args.command_parser.error(
            f"the following arguments are required: {', '.join(map(parameters.option, missing))}"
        )
    if getattr(args, "model_name", "") is None:  # not given: named after the data
        args.model_name = parameters.model_name_from(args.data)
    try:
        for name, remote in places(args).items():
            value = getattr(args, name)
            if value is not None and not isinstance(value, str):  # argparse's "--x=--"
                raise InputError(f"{parameters.option(name)}: give it a value")
            if value is not None:
                parameters.check_location(parameters.option(name), value, False, remote)
    except InputError as e:
        fail(str(e))
    return args


def parse_known(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed; an unknown option is named by the command's own parser, with the
    closest of its options."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        known = set(re.findall(r"--[a-z][a-z-]*", args.command_parser.format_help()))
        close = difflib.get_close_matches(unknown[0].split("=", 1)[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


def places(args: argparse.Namespace) -> dict[str, bool]:
    """The command's options (besides the pipeline parameters, checked with the others)
    that name a place to read or write, each with whether a gs:// URI may be given."""
    found = {"pipeline_root": False, "summary": False, "out": False, "model": True}
    found |= {"registry": True} if args.command in ("models", "promote") else {}
    found |= {"output": False} if args.command == "compile" else {}
    return {name: remote for name, remote in found.items() if hasattr(args, name)}


def pipeline_params(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in settings.BY_NAME}


def add_compile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-repository",
        default=settings.IMAGE_REPOSITORY,
        help="the steps' images are REPOSITORY-cpu:TAG and REPOSITORY-gpu:TAG, as `make images` "
        "builds them; give your registry's path, e.g. REGISTRY/PROJECT/shapes-pipeline "
        "($SHAPES_IMAGE_REPOSITORY)",
    )
    parser.add_argument("--image-tag", default=settings.IMAGE_TAG, help="($SHAPES_IMAGE_TAG)")
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="GPUs for each extract task and for training (0: a CPU-only cluster)",
    )
    parser.add_argument(
        "--extract-parallelism",
        type=int,
        default=settings.BY_NAME["extract_workers"].default,
        help="extract tasks running at once (KFP fixes it when compiling; "
        "--extract-workers sets how many there are)",
    )
    parser.add_argument(
        "--gpu-node-selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a node label the extract and training pods must match (repeatable)",
    )


def add_model_options(parser: argparse.ArgumentParser, default_output: str) -> None:
    parser.add_argument(
        "--model-name", default=settings.BY_NAME["model_name"].default, help="the registry's model"
    )
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default=default_output, help="how to print"
    )
