"""``shapes-pipeline``: the command line. Each command is a small function over the
modules that do the work; the pipeline's parameters, their defaults and their help come
from the pipeline function (``pipeline.py``), through ``shapes_pipeline.runners.parameters``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from shapes_pipeline.helpers import settings
from shapes_pipeline.helpers.step import InfrastructureError, InputError
from shapes_pipeline.runners import parameters
from shapes_pipeline.runners.cli_options import (
    Formatter,
    Parser,
    add_compile_options,
    add_model_options,
    add_pipeline_options,
    parse,
    pipeline_params,
)
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
GENERATE_PER_CLASS = (1, 100_000)  # demo images per class: enough for any trial


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

    with cluster_session(args) as (params, _, package, client):
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

    with cluster_session(args) as (params, cron, package, client):
        recurring_id = cluster.schedule(
            client, package, params, cron=cron, experiment=args.experiment,
            namespace=args.namespace, name=args.name, service_account=args.service_account,
        )  # fmt: skip
    print(f"recurring run {recurring_id}: cron {cron!r}, at most one run at a time, no catch-up")
    return EXIT_OK


@contextmanager
def cluster_session(args: argparse.Namespace) -> Iterator[tuple[dict, str | None, str, Any]]:
    """The checked request (parameters, cron), the pipeline compiled for it and a KFP
    client, with whatever the API or the way to it fails with as one line."""
    from shapes_pipeline.runners import cluster

    params, cron = cluster_request(args)
    images = cluster.image_names(args.image_repository, args.image_tag)
    with (
        cluster.compiled(
            args.gpus, args.gpu_node_selector, args.extract_parallelism, images
        ) as package,
        cluster.talking_to(args.host),
    ):
        yield params, cron, package, cluster.client(args.host, args.namespace, args.token)


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
