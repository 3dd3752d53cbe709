"""``shapes-pipeline``: the command line. Each command is a small function over the
modules that do the work; the pipeline's parameters, their defaults and their help come
from the pipeline function (``pipeline.py``), through ``shapes_pipeline.runners.parameters``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from shapes_pipeline.helpers import settings
from shapes_pipeline.helpers.step import InfrastructureError, InputError
from shapes_pipeline.runners import parameters
from shapes_pipeline.runners.exits import (
    EXIT_GATE_REFUSED,
    EXIT_OK,
    EXIT_STEP_FAILED,
    exit_code_of,
    fail,
    internal_error,
)

DESCRIPTION = """\
Train an image classifier by transfer learning (a frozen keras.applications backbone under
a small dense head), evaluate it against the model in production, and publish it to a
versioned registry if it is good enough. The same Kubeflow pipeline runs on this machine
(run), on a Kubeflow Pipelines cluster (submit) or on a schedule there (schedule).

Data: one folder per class of images (local folder, gs:// prefix or .zip).
"""
EPILOG = """\
exit status: 0 success; 1 a step failed (its log is named) or the machine or storage
failed (no space, a read-only file system; the cause is named); 2 bad usage or bad input
(nothing was run or written); 3 the run finished but the gate refused to export the model.
"""
CLUSTER_ONLY = ("gpus", "gpu_node_selector", "extract_parallelism")


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


GENERATE_PER_CLASS = (1, 100_000)  # demo images per class: enough for any trial
CONFIG_LIMIT = 1 << 20  # bytes: a parameter file is a few hundred


def read_config(path: str) -> dict:
    """The parameters of a YAML or JSON file, each of its parameter's type. A FIFO, a
    device or a file larger than ``CONFIG_LIMIT`` is refused before it is read (reading
    one could wait forever, or fill the memory)."""
    import stat

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


# ---------------------------------------------------------------------------- commands


def cmd_generate(args: argparse.Namespace) -> int:
    from shapes_pipeline.helpers.demo_data import generate

    for name, value, (low, high) in (
        ("--per-class", args.per_class, GENERATE_PER_CLASS),
        ("--seed", args.seed, parameters.RANGES["seed"]),
    ):
        if not low <= value <= high:
            fail(f"{name} {parameters.shown(value)}: must be between {low} and {high}")
    out = Path(args.out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        fail(
            f"--out {parameters.shown(args.out)}: exists and is not an empty folder; name a new one"
        )
    written = generate(args.out, per_class=args.per_class, seed=args.seed)
    print(f"wrote {len(written)} images to {args.out}")
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    from shapes_pipeline.runners import cluster
    from shapes_pipeline.steps import preflight

    try:
        if not args.output.endswith(".yaml"):
            raise InputError(f"-o {parameters.shown(args.output)}: KFP writes a .yaml file")
        preflight.check_output(args.output, "-o")
        cluster.compile_pipeline(
            args.output, args.gpus, args.gpu_node_selector, args.extract_parallelism,
            cluster.image_names(args.image_repository, args.image_tag),
        )  # fmt: skip
    except InputError as e:
        fail(str(e))
    print(f"wrote {args.output}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from shapes_pipeline.helpers import report
    from shapes_pipeline.runners import local_run
    from shapes_pipeline.steps import preflight

    params = pipeline_params(args)
    try:
        parameters.check(params)
        preflight.check_output(args.summary, "--summary")  # cheap: before demo data or a scan
        params = preflight.resolve_local(params, args.pipeline_root)
        found = preflight.check_inputs(params)
    except InputError as e:
        fail(str(e))
    note = preflight.weights_note(params)
    if args.dry_run:
        print("\n".join(filter(None, [found, note])))
        print(json.dumps(params, indent=2))
        return EXIT_OK
    console = local_run.Console(sys.stdout, verbosity=1 + args.verbose - args.quiet)
    console.say("\n".join(filter(None, [found, note])))
    try:
        summary = local_run.run_locally(
            params, pipeline_root=args.pipeline_root, cache=args.cache, console=console
        )
    except local_run.StepFailed as e:
        print(f"error: {e}", file=sys.stderr)
        if args.quiet < 1 and not args.verbose:
            print(f"--- the last {len(e.tail)} lines of {e.log}:", file=sys.stderr)
            print("\n".join(e.tail), file=sys.stderr)
        print(f"full log: {e.log}", file=sys.stderr)
        return EXIT_STEP_FAILED
    try:
        Path(args.summary).write_text(json.dumps(summary, indent=2))
    except OSError as e:  # the run is done (and its model may be published): not bad input
        fail(f"{args.summary}: {e.strerror}; the run itself finished", EXIT_STEP_FAILED)
    print(report.result_block(summary, args.summary))
    return EXIT_OK if summary["gate"]["passed"] else EXIT_GATE_REFUSED


def cmd_submit(args: argparse.Namespace) -> int:
    from shapes_pipeline.runners import cluster

    params, _ = cluster_request(args)
    with (
        cluster.compiled(
            args.gpus,
            args.gpu_node_selector,
            args.extract_parallelism,
            cluster.image_names(args.image_repository, args.image_tag),
        ) as package,
        cluster.talking_to(args.host),
    ):
        client = cluster.client(args.host, args.namespace, args.token)
        run_id = cluster.submit(
            client, package, params, experiment=args.experiment, namespace=args.namespace,
            run_name=args.run_name, service_account=args.service_account,
        )  # fmt: skip
        print(f"run {run_id}: {cluster.run_url(args.host, run_id)}")
        if args.wait:
            state = cluster.wait(client, run_id, args.timeout, args.poll_seconds)
            print(f"run {run_id}: {state}")
            if state.upper() != "SUCCEEDED":
                return EXIT_STEP_FAILED
    return EXIT_OK


def cmd_schedule(args: argparse.Namespace) -> int:
    from shapes_pipeline.runners import cluster

    params, cron = cluster_request(args)
    with (
        cluster.compiled(
            args.gpus,
            args.gpu_node_selector,
            args.extract_parallelism,
            cluster.image_names(args.image_repository, args.image_tag),
        ) as package,
        cluster.talking_to(args.host),
    ):
        recurring_id = cluster.schedule(
            cluster.client(args.host, args.namespace, args.token), package, params, cron=cron,
            experiment=args.experiment, namespace=args.namespace, name=args.name,
            service_account=args.service_account,
        )  # fmt: skip
    print(f"recurring run {recurring_id}: cron {cron!r}, at most one run at a time, no catch-up")
    return EXIT_OK


def cluster_request(args: argparse.Namespace) -> tuple[dict, str | None]:
    """The run's parameters and (``schedule``) KFP's cron, checked before any request."""
    from shapes_pipeline.runners import cluster

    params = pipeline_params(args)
    try:
        parameters.check(params)
        cron = cluster.check_request(params, getattr(args, "cron", None))
        cluster.check_compile_options(args.gpus, args.gpu_node_selector, args.extract_parallelism)
        cluster.image_names(args.image_repository, args.image_tag)
        cluster.check_host_form(args.host)
        for name in ("connect_timeout", "timeout", "poll_seconds"):  # submit's, if given
            value = getattr(args, name, 1.0)
            if not 0 < value < 10**7:  # nan and inf too
                raise InputError(f"{parameters.option(name)} {value}: seconds, above 0")
    except InputError as e:
        fail(str(e))
    cluster.check_host(args.host, args.connect_timeout, args.token)
    return params, cron


# ------------------------------------------------------------------------------ parser


def parser() -> argparse.ArgumentParser:

    from shapes_pipeline.runners.cli_models import cmd_models, cmd_predict, cmd_promote

    cli = Parser(
        prog="shapes-pipeline", description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter
    )
    cli.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = cli.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, func) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text, epilog=EPILOG, formatter_class=Formatter
        )
        sub.set_defaults(func=func, command_parser=sub)
        return sub

    run = command("run", "run the whole pipeline on this machine (kfp.local)", cmd_run)
    local_defaults = {"data": None, "registry": "registry", "weights": "auto", "extract_workers": 1,
                      "model_name": None}  # fmt: skip
    add_pipeline_options(run, local_defaults)
    run.add_argument("--pipeline-root", default="runs", help="where each run's folder goes")
    run.add_argument("--summary", default="summary.json", help="the run's summary (JSON)")
    run.add_argument(
        "--cache",
        action="store_true",
        help="reuse split and train outputs of an earlier run with the same inputs "
        "(kfp.local's cache; its key does not see changes to shapes_pipeline/)",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="check everything, print the parameters, stop"
    )
    loudness = run.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="count", default=0, help="every log line")
    loudness.add_argument("-q", "--quiet", action="count", default=0, help="the result only")

    for name, help_text, func in (
        ("submit", "start one run on a Kubeflow Pipelines cluster", cmd_submit),
        ("schedule", "create a recurring run on a Kubeflow Pipelines cluster", cmd_schedule),
    ):
        sub = command(name, help_text, func)
        add_pipeline_options(sub, {"model_name": None})
        sub.add_argument("--host", required=True, help="the KFP API, e.g. http://localhost:8080")
        sub.add_argument("--namespace", help="multi-user Kubeflow: the profile's namespace")
        sub.add_argument("--experiment", default=settings.PIPELINE_NAME, help="created if missing")
        sub.add_argument(
            "--token",
            default=os.environ.get("KFP_TOKEN"),
            help="bearer token ($KFP_TOKEN; else the mounted service account token)",
        )
        sub.add_argument("--service-account", help="Kubernetes account the steps run as")
        sub.add_argument(
            "--connect-timeout", type=float, default=30.0, help="s to wait for the API's answer"
        )
        add_compile_options(sub)
    submit = commands.choices["submit"]
    submit.add_argument("--run-name", help="the run's name in the KFP UI")
    submit.add_argument("--wait", action="store_true", help="follow the run to its end")
    submit.add_argument("--timeout", type=float, default=24 * 3600, help="--wait's limit, s")
    submit.add_argument("--poll-seconds", type=float, default=10.0, help="--wait's interval")
    scheduled = commands.choices["schedule"]
    scheduled.add_argument(
        "--cron", required=True, help="'minute hour day month weekday', or KFP's six fields"
    )
    scheduled.add_argument("--name", default=f"{settings.PIPELINE_NAME}-retraining")

    comp = command("compile", "write the pipeline spec to upload to Kubeflow", cmd_compile)
    comp.add_argument("-o", "--output", default="pipeline.yaml", help="the spec's file")
    add_compile_options(comp)

    pred = command("predict", "classify images with a published model", cmd_predict)
    pred.add_argument(
        "--model", required=True, help="a version folder, or a registry (its production model)"
    )
    add_model_options(pred, default_output="json")
    pred.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")

    promote = command(
        "promote",
        "make a published version production (a rollback, or the repair of a broken LATEST)",
        cmd_promote,
    )
    promote.add_argument("--registry", required=True, help="a local folder or gs:// URI")
    promote.add_argument("--version", required=True, help="a published version's name")
    add_model_options(promote, default_output="table")

    models = command("models", "list a registry's versions", cmd_models)
    models.add_argument("--registry", required=True, help="a local folder or gs:// URI")
    add_model_options(models, default_output="table")

    gen = command("generate", "write hand-drawn demo shapes (Kaggle layout)", cmd_generate)
    gen.add_argument("--out", required=True, help="the folder to write")
    gen.add_argument("--per-class", type=int, default=100, help="images per class")
    gen.add_argument("--seed", type=int, default=0, help="the same seed, the same bytes")
    return cli


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


def version() -> str:
    try:
        return metadata.version("shapes-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    args = parse(parser(), argv)
    try:
        code = args.func(args)
    except OSError as e:  # one line: what the system refused, and whose fault it is
        fail(f"{e.filename}: {e.strerror}" if e.filename else str(e), exit_code_of(e))
    except InputError as e:
        fail(str(e))
    except InfrastructureError as e:
        fail(str(e), EXIT_STEP_FAILED)
    except Exception as e:  # a bug: one line here, the traceback in a log of its own
        fail(internal_error(args.command, e), EXIT_STEP_FAILED)
    sys.exit(code)


if __name__ == "__main__":
    main()
