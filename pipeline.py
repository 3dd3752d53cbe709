"""The Kubeflow pipeline (split -> train -> evaluate -> gated export) and its CLI.

Each KFP component is a thin wrapper: it imports the step from ``components`` inside its
body (the project's image has the package installed) and turns the step's result into KFP
artifacts and metadata. ``shapes-pipeline --help`` lists the commands.
"""

import argparse
import inspect
import json
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kfp import compiler, dsl, kubernetes
from kfp.dsl import (
    HTML,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

PIPELINE_NAME = "shapes-transfer-learning"
# The images every step runs in; one setting, read when the pipeline is defined.
IMAGE_REPOSITORY = os.environ.get("SHAPES_IMAGE_REPOSITORY", "shapes-pipeline")
IMAGE_TAG = os.environ.get("SHAPES_IMAGE_TAG", "0.1.0")
CPU_IMAGE = f"{IMAGE_REPOSITORY}-cpu:{IMAGE_TAG}"
GPU_IMAGE = f"{IMAGE_REPOSITORY}-gpu:{IMAGE_TAG}"


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def split(
    data: str, seed: int, train_fraction: float, val_fraction: float, dataset: Output[Dataset]
):
    from components.step import step

    with step(dataset.metadata):
        from components.split import split_dataset

        facts = split_dataset(
            data, dataset.path, seed=seed, train_fraction=train_fraction, val_fraction=val_fraction
        )
        dataset.metadata.update(facts)


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    backbone: str,
    weights: str,
    image_size: int,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    augment: bool,
    augment_views: int,
    fine_tune_layers: int,
    fine_tune_lr: float,
    model: Output[Model],
):
    from components.step import step

    with step(model.metadata):
        from components.train import train

        facts = train(
            dataset.path,
            model.path,
            backbone=backbone,
            weights=weights,
            image_size=image_size,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            seed=seed,
            augment=augment,
            augment_views=augment_views,
            fine_tune_layers=fine_tune_layers,
            fine_tune_lr=fine_tune_lr,
        )
        model.metadata.update(facts)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
    summary: Output[Markdown],
    predictions: Output[Dataset],
    evaluation: Output[Dataset],
    registry: str,
    model_name: str,
    min_accuracy: float,
    max_regression: float,
) -> bool:
    """Returns the gate's decision: export or not (see ``components.evaluate.decide``)."""
    from components.step import step

    with step(evaluation.metadata):
        from components.evaluate import evaluate

        result = evaluate(
            dataset.path,
            model.path,
            predictions_path=predictions.path,
            report_path=report.path,
            evaluation_path=evaluation.path,
            summary_path=summary.path,
            registry_uri=registry,
            model_name=model_name,
            min_accuracy=min_accuracy,
            max_regression=max_regression,
        )
        gate = result["gate"]
        evaluation.metadata["gate"] = gate
        # Where the inputs came from: with caching they may be another run's outputs.
        evaluation.metadata["inputs"] = {"dataset": dataset.uri, "model": model.uri}
        metrics.log_metric("gate_passed", float(gate["passed"]))
        if gate["champion_accuracy"] is not None:
            metrics.log_metric("champion_accuracy", gate["champion_accuracy"])
        metrics.log_metric("accuracy", result["test_accuracy"])
        metrics.log_metric("accuracy_ci95_low", result["accuracy_ci95"][0])
        metrics.log_metric("accuracy_ci95_high", result["accuracy_ci95"][1])
        metrics.log_metric("macro_f1", result["classification_report"]["macro avg"]["f1-score"])
        confusion.log_confusion_matrix(result["classes"], result["confusion_matrix"])
    return result["gate"]["passed"]


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def export(
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Dataset],
    predictions: Input[Dataset],
    registry: str,
    model_name: str,
    run_id: str,
    run_name: str,
    registered_model: Output[Model],
):
    import json

    from components.step import step

    with step(registered_model.metadata):
        from components.export import export

        facts = export(
            model.path,
            dataset.path,
            evaluation.path,
            predictions.path,
            registry=registry,
            model_name=model_name,
            pipeline_run={"id": run_id, "name": run_name},
        )
        with open(registered_model.path, "w") as f:
            json.dump(facts, f, indent=2)
        registered_model.metadata.update(facts)


def make_pipeline(gpu_node_selector: dict[str, str] | None = None, gpus: int = 1):
    """The pipeline; training asks for ``gpus`` GPUs (0: a CPU-only cluster such as kind)
    and ``gpu_node_selector`` pins it to labelled GPU nodes."""

    @dsl.pipeline(name=PIPELINE_NAME, description="Transfer learning on Basic Shapes images")
    def shapes_pipeline(
        data: str,
        registry: str,
        backbone: str = "InceptionResNetV2",
        weights: str = "imagenet",
        image_size: int = 128,
        epochs: int = 500,
        batch_size: int = 32,
        patience: int = 20,
        seed: int = 230,
        augment: bool = False,
        augment_views: int = 8,
        fine_tune_layers: int = 0,
        fine_tune_lr: float = 1e-5,
        train_fraction: float = 0.8,
        val_fraction: float = 0.1,
        min_accuracy: float = 0.9,
        max_regression: float = 0.0,
        model_name: str = "shapes-classifier",
    ):
        split_task = split(
            data=data, seed=seed, train_fraction=train_fraction, val_fraction=val_fraction
        )
        split_task.set_cpu_request("1").set_memory_request("2G").set_memory_limit("4G")

        train_task = train(
            dataset=split_task.outputs["dataset"],
            backbone=backbone,
            weights=weights,
            image_size=image_size,
            epochs=epochs,
            batch_size=batch_size,
            patience=patience,
            seed=seed,
            augment=augment,
            augment_views=augment_views,
            fine_tune_layers=fine_tune_layers,
            fine_tune_lr=fine_tune_lr,
        )
        train_task.set_cpu_request("4").set_memory_request("16G").set_memory_limit("32G")
        if gpus:
            train_task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
            kubernetes.add_toleration(
                train_task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"
            )
        for key, value in (gpu_node_selector or {}).items():
            kubernetes.add_node_selector(train_task, label_key=key, label_value=value)

        eval_task = evaluate(
            dataset=split_task.outputs["dataset"],
            model=train_task.outputs["model"],
            registry=registry,
            model_name=model_name,
            min_accuracy=min_accuracy,
            max_regression=max_regression,
        )
        eval_task.set_cpu_request("2").set_memory_request("4G").set_memory_limit("8G")
        # The gate compares with the registry's production model, which is not an input:
        # a cached decision could be stale.
        eval_task.set_caching_options(False)

        with dsl.If(eval_task.outputs["Output"] == True, name="gate"):  # noqa: E712
            export_task = export(
                dataset=split_task.outputs["dataset"],
                model=train_task.outputs["model"],
                evaluation=eval_task.outputs["evaluation"],
                predictions=eval_task.outputs["predictions"],
                registry=registry,
                model_name=model_name,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            )
            export_task.set_cpu_request("1").set_memory_request("4G").set_memory_limit("8G")
            export_task.set_caching_options(False)  # a cached export would publish nothing

    return shapes_pipeline


def pipeline_defaults() -> dict:
    """The pipeline's parameters and defaults: the one place they are set."""
    signature = inspect.signature(make_pipeline().pipeline_func)
    return {name: p.default for name, p in signature.parameters.items()}


# ---------------------------------------------------------------------------- CLI


def _add_pipeline_options(parser: argparse.ArgumentParser, overrides: dict) -> None:
    for name, default in pipeline_defaults().items():
        default = overrides.get(name, default)
        required = default is inspect.Parameter.empty
        if isinstance(default, bool):
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                action=argparse.BooleanOptionalAction,
                default=default,
            )
            continue
        kind = type(default) if isinstance(default, int | float) else str
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            required=required,
            default=None if required else default,
            help=None if required else f"default: {default}",
        )


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def cmd_generate(args: argparse.Namespace) -> None:
    from components.demo_data import generate

    written = generate(args.out, per_class=args.per_class, seed=args.seed)
    print(f"wrote {len(written)} images to {args.out}")


def _compile(args: argparse.Namespace, output: str) -> None:
    """``--gpus`` and ``--gpu-node-selector`` (an empty one is none, as a ConfigMap may
    leave it) into the compiled spec at ``output``."""
    given = [kv for kv in args.gpu_node_selector if kv]
    bad = [kv for kv in given if "=" not in kv.strip("=")]
    if bad:
        _fail(f"--gpu-node-selector {bad[0]}: expected KEY=VALUE")
    if args.gpus < 0:
        _fail(f"--gpus {args.gpus}: must be at least 0")
    selector = dict(kv.split("=", 1) for kv in given)
    compiler.Compiler().compile(make_pipeline(selector, args.gpus), output)


def _add_compile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpus", type=int, default=1, help="GPUs for training (0 on a CPU-only cluster)"
    )
    parser.add_argument(
        "--gpu-node-selector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="node label the training pod must match (repeatable)",
    )


def cmd_compile(args: argparse.Namespace) -> None:
    _compile(args, args.output)
    print(f"wrote {args.output}")


def _absolute(uri: str) -> str:
    from components import storage

    return uri if storage.is_gcs(uri) else str(Path(uri).resolve())


# Ranges of the numeric parameters: (smallest, largest), inclusive; None is unbounded.
PARAMETER_RANGES = {
    "image_size": (32, None),
    "epochs": (1, None),
    "batch_size": (1, None),
    "patience": (0, None),
    "train_fraction": (0.01, 0.99),
    "val_fraction": (0.0, 0.9),
    "augment_views": (1, 100),
    "fine_tune_layers": (0, None),
    "fine_tune_lr": (0.0, 1.0),
    "max_regression": (0.0, 1.0),
}


def check_parameters(params: dict) -> None:
    from components.step import InputError

    for name, (low, high) in PARAMETER_RANGES.items():
        value = params[name]
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"between {low} and {high}"
            raise InputError(f"--{name.replace('_', '-')} {value}: must be {bound}")


def preflight(params: dict) -> None:
    """Checks the inputs before anything runs, so bad input never costs a training run."""
    from components import registry, split, storage
    from components.step import InputError

    try:
        check_parameters(params)
        classes = split.scan(
            params["data"],
            **{k: params[k] for k in ("seed", "train_fraction", "val_fraction")},
        )
        storage.check_bucket(params["registry"])
        registry.path(params["registry"], params["model_name"])
        if params["weights"] not in ("imagenet", "none", "auto"):
            storage.check_exists(params["weights"])
    except InputError as e:
        _fail(str(e))
    print(
        f"data: {params['data']}: {sum(map(len, classes.values()))} images, classes {list(classes)}"
    )


def task_output(run_dir: Path, task: str) -> dict:
    """A finished task's parameters and each output artifact's uri and metadata."""
    path = run_dir / task / "executor_output.json"
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    outputs = dict(raw.get("parameterValues", {}))
    for name, entry in raw.get("artifacts", {}).items():
        artifact = entry["artifacts"][0]
        outputs[name] = {"uri": artifact["uri"], **artifact.get("metadata", {})}
    return outputs


def summarize(run_dir: Path, total_seconds: float) -> dict:
    eval_out = task_output(run_dir, "evaluate")
    export_out = task_output(run_dir, "export").get("registered_model")
    evaluation = json.loads(Path(eval_out["evaluation"]["uri"]).read_text())
    # A step taken from kfp.local's cache did not run here: its outputs are in the folder
    # of the run that made them (``<run>/<step>/<artifact>``).
    made_by = {
        step: Path(eval_out["evaluation"]["inputs"][name]).parents[1]
        for step, name in (("split", "dataset"), ("train", "model"))
    }
    split_out = task_output(made_by["split"], "split")["dataset"]
    train_out = task_output(made_by["train"], "train")["model"]
    return {
        "test_accuracy": evaluation["test_accuracy"],
        "accuracy_ci95": evaluation["accuracy_ci95"],
        "classes": evaluation["classes"],
        "confusion_matrix": evaluation["confusion_matrix"],
        "classification_report": evaluation["classification_report"],
        "gate": evaluation["gate"],
        "exported": export_out is not None,
        "model_uri": export_out["uri"] if export_out else None,
        "report_uri": eval_out["report"]["uri"],
        "predictions_uri": eval_out["predictions"]["uri"],
        "trained_model_uri": train_out["uri"],
        "dataset_uri": split_out["uri"],
        "backbone": train_out["backbone"],
        "weights": train_out["weights"],
        "warnings": evaluation["warnings"],
        "epochs_run": train_out["epochs_run"],
        "caching": train_out["caching"],
        "precision": train_out["precision"],
        "devices": train_out["devices"],
        "timings_s": {  # a reused step took no time in this run
            "split": 0.0 if made_by["split"] != run_dir else split_out["seconds"],
            "train": 0.0 if made_by["train"] != run_dir else train_out["seconds"],
            "evaluate": eval_out["evaluation"]["seconds"],
            "export": export_out["seconds"] if export_out else 0.0,
            "total": round(total_seconds, 2),
        },
        "peak_memory_mb": {
            "split": split_out["peak_memory_mb"],
            "train": train_out["peak_memory_mb"],
            "evaluate": eval_out["evaluation"]["peak_memory_mb"],
            "export": export_out["peak_memory_mb"] if export_out else None,
        },
        "run_dir": str(run_dir),
        "reused": [step for step, folder in made_by.items() if folder != run_dir],
    }


def _new_run(root: Path, before: set[Path]) -> Path:
    """The folder kfp.local made for this run under the pipeline root."""
    (run_dir,) = [p for p in set(root.iterdir()) - before if p.name.startswith(PIPELINE_NAME)]
    return run_dir


def cmd_run(args: argparse.Namespace) -> None:
    from kfp import local

    started = time.perf_counter()
    params = {name: getattr(args, name) for name in pipeline_defaults()}
    root = Path(args.pipeline_root).resolve()
    if params["data"] is None:
        from components.demo_data import generate

        params["data"] = str(root / "demo-data")
        if not Path(params["data"]).exists():
            generate(params["data"])
    for key in ("data", "registry"):
        params[key] = _absolute(params[key])
    if params["weights"] not in ("imagenet", "none", "auto"):
        params["weights"] = _absolute(params["weights"])
    preflight(params)

    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    # kfp.local warns that it ignores base images and GPU requests: expected when run locally.
    warnings.filterwarnings("ignore", message=".*(base image|no effect in the current local)")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        enable_caching=args.cache,
    )
    try:
        make_pipeline()(**params)
    except RuntimeError as e:
        failed = re.search(
            r"Inner task failed: \W*'([\w-]+)", re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        )
        step = failed.group(1) if failed else "unknown"
        _fail(f"step {step!r} failed; the end of its log above says why ({_new_run(root, before)})")
    run_dir = _new_run(root, before)

    summary = summarize(run_dir, time.perf_counter() - started)
    # The KFP artifact has no file extension; a copy that a browser opens as a page:
    summary["report_html"] = str(run_dir / "report.html")
    shutil.copyfile(summary["report_uri"], summary["report_html"])
    Path(args.summary).write_text(json.dumps(summary, indent=2))
    for warning in summary["warnings"]:
        print(f"WARNING: {warning}")
    print(
        f"test accuracy: {summary['test_accuracy']:.4f} "
        f"({summary['backbone']}, weights {summary['weights']})"
    )
    print(f"report: {summary['report_html']}")
    if summary["exported"]:
        print(f"exported model: {summary['model_uri']}")
    else:
        print(f"not exported: {summary['gate']['reason']}")
    if summary["reused"]:
        print(f"reused from an earlier run (cache): {', '.join(summary['reused'])}")
    print(f"summary: {args.summary}  ({summary['timings_s']['total']:.1f} s)")


def cmd_predict(args: argparse.Namespace) -> None:

    from components import dataset, registry, storage
    from components.step import InputError

    try:
        version = registry.resolve(args.model, args.model_name)
        for image in args.images:
            dataset.check_image(image)
        from components import model  # TensorFlow, only once the inputs are known to be good

        with storage.local_tree(version) as local:
            predict, classes = model.load(local)
            probabilities = predict([Path(p) for p in args.images])
    except InputError as e:
        _fail(str(e))
    for path, row in zip(args.images, probabilities, strict=True):
        line = {
            "path": path,
            "class": classes[int(row.argmax())],
            "probabilities": {c: round(float(p), 6) for c, p in zip(classes, row, strict=True)},
        }
        print(json.dumps(line))


def _cluster_request(args: argparse.Namespace) -> tuple[dict, str | None]:
    """The run's parameters and (``schedule``) KFP's cron, checked before any request."""
    from components import registry, storage
    from components.cluster import kfp_cron
    from components.step import InputError

    params = {name: getattr(args, name) for name in pipeline_defaults()}
    try:
        check_parameters(params)
        for name in ("data", "registry"):
            if not storage.is_gcs(params[name]):
                raise InputError(
                    f"--{name} {params[name]}: a cluster's steps need a gs:// URI "
                    "(a local path is not in their containers)"
                )
            storage.split_gcs(params[name])
        registry.path(params["registry"], params["model_name"])
        cron = kfp_cron(args.cron) if getattr(args, "cron", None) else None
    except InputError as e:
        _fail(str(e))
    return params, cron


@contextmanager
def _compiled(args: argparse.Namespace) -> Iterator[str]:
    """The pipeline compiled for the cluster (``--gpus``, ``--gpu-node-selector``) into a
    temporary file, which kfp's client uploads."""
    with tempfile.TemporaryDirectory() as tmp:
        package = f"{tmp}/pipeline.yaml"
        _compile(args, package)
        yield package


def cmd_submit(args: argparse.Namespace) -> None:
    from components import cluster

    params, _ = _cluster_request(args)
    with _compiled(args) as package:
        kfp_client = cluster.client(args.host, args.namespace, args.token)
        run_id = cluster.submit(
            kfp_client,
            package,
            params,
            experiment=args.experiment,
            namespace=args.namespace,
            run_name=args.run_name,
            service_account=args.service_account,
        )
    print(f"run {run_id}: {cluster.run_url(args.host, run_id)}")
    if args.wait:
        state = cluster.wait(kfp_client, run_id, args.timeout, args.poll_seconds)
        print(f"run {run_id}: {state}")
        if state.upper() != "SUCCEEDED":
            sys.exit(1)


def cmd_schedule(args: argparse.Namespace) -> None:
    from components import cluster

    params, cron = _cluster_request(args)
    with _compiled(args) as package:
        recurring_id = cluster.schedule(
            cluster.client(args.host, args.namespace, args.token),
            package,
            params,
            cron=cron,
            experiment=args.experiment,
            namespace=args.namespace,
            name=args.name,
            service_account=args.service_account,
        )
    print(f"recurring run {recurring_id}: cron {cron!r}, at most one run at a time, no catch-up")


def cmd_models(args: argparse.Namespace) -> None:
    from components import registry
    from components.step import InputError

    try:
        found = registry.versions(args.registry, args.model_name)
    except InputError as e:
        _fail(str(e))
    if not found:
        print(f"no versions of {args.model_name} in {args.registry}")
        return
    print(f"{'':2}{'version':<28}{'created':<27}{'test accuracy':>14}  backbone")
    for v in found:
        mark = "* " if v["production"] else "  "
        accuracy = v["metrics"]["test_accuracy"]
        print(f"{mark}{v['version']:<28}{v['created']:<27}{accuracy:>14.4f}  {v['backbone']}")
    print("* production (LATEST)")


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="shapes-pipeline", description=__doc__)
    commands = cli.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="write hand-drawn demo shapes (Kaggle layout)")
    gen.add_argument("--out", required=True)
    gen.add_argument("--per-class", type=int, default=100)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=cmd_generate)

    comp = commands.add_parser("compile", help="write the pipeline spec for a Kubeflow cluster")
    comp.add_argument("-o", "--output", default="pipeline.yaml")
    _add_compile_options(comp)
    comp.set_defaults(func=cmd_compile)

    run = commands.add_parser("run", help="run the whole pipeline locally through kfp.local")
    _add_pipeline_options(run, {"weights": "auto", "registry": "registry", "data": None})
    run.add_argument("--pipeline-root", default="runs", help="where step outputs go")
    run.add_argument("--summary", default="summary.json")
    run.add_argument(
        "--cache",
        action="store_true",
        help="reuse split and train outputs of an earlier run with the same inputs "
        "(kfp.local's cache; its key does not see changes to components/, so off by default)",
    )
    run.set_defaults(func=cmd_run)

    for name, help_text in (
        ("submit", "start one run on a Kubeflow Pipelines cluster"),
        ("schedule", "create a recurring run on a Kubeflow Pipelines cluster"),
    ):
        sub = commands.add_parser(name, help=help_text)
        _add_pipeline_options(sub, {})
        sub.add_argument("--host", required=True, help="the KFP API, e.g. http://localhost:8080")
        sub.add_argument("--namespace", default=None, help="multi-user Kubeflow: the profile")
        sub.add_argument("--experiment", default=PIPELINE_NAME)
        sub.add_argument(
            "--token",
            default=os.environ.get("KFP_TOKEN"),
            help="bearer token (default: $KFP_TOKEN, else the mounted service account token)",
        )
        sub.add_argument(
            "--service-account",
            default=None,
            help="Kubernetes service account the steps run as (default: KFP's own)",
        )
        _add_compile_options(sub)
    submit = commands.choices["submit"]
    submit.add_argument("--run-name", default=None)
    submit.add_argument("--wait", action="store_true", help="follow the run to its end")
    submit.add_argument("--timeout", type=float, default=24 * 3600, help="--wait's limit, s")
    submit.add_argument("--poll-seconds", type=float, default=10.0)
    submit.set_defaults(func=cmd_submit)
    scheduled = commands.choices["schedule"]
    scheduled.add_argument(
        "--cron", required=True, help="'minute hour day month weekday', or KFP's 6 fields"
    )
    scheduled.add_argument("--name", default=f"{PIPELINE_NAME}-retraining")
    scheduled.set_defaults(func=cmd_schedule)

    pred = commands.add_parser("predict", help="classify image files with an exported model")
    pred.add_argument(
        "--model", required=True, help="a version folder, or a registry (its production model)"
    )
    pred.add_argument("--model-name", default=pipeline_defaults()["model_name"])
    pred.add_argument("images", nargs="+", metavar="IMAGE")
    pred.set_defaults(func=cmd_predict)

    models = commands.add_parser("models", help="list a registry's versions")
    models.add_argument("--registry", required=True)
    models.add_argument("--model-name", default=pipeline_defaults()["model_name"])
    models.set_defaults(func=cmd_models)
    return cli


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
