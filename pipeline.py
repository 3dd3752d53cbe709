"""The Kubeflow pipeline: split -> plan -> extract (fanned out) -> train -> evaluate ->
export (only past the gate).

Split writes the data set as TFRecord shards; plan turns ``extract_workers`` into groups of
shards; ``dsl.ParallelFor`` runs one extract task (the frozen backbone, on a GPU) per
group, and ``dsl.Collected`` hands every group's feature shards to train and evaluate.

The components (``components/kfp_components.py``) are thin wrappers around the steps.
``shapes_pipeline`` is the pipeline as KFP's own tools expect it
(``kfp dsl compile --py pipeline.py --output pipeline.yaml``); ``make_pipeline`` builds it
for a cluster's GPUs. ``python pipeline.py`` writes ``pipeline.yaml``. Its parameters (the
signature and the docstring KFP reads, so its UI shows each with its help) are made from
the parameter table, ``shapes_pipeline/helpers/settings.py``.
"""

import inspect
from typing import NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import HTML, Dataset, Model

from shapes_pipeline.helpers.settings import (
    DEFAULT_EXTRACT_WORKERS,
    PARAMETERS,
    PIPELINE_NAME,
    group,
)
from shapes_pipeline.kubeflow.components.kfp_components import (
    evaluate,
    export,
    extract,
    plan,
    split,
    train,
)

# A failed pod (a storage 5xx, a lost node) is retried with backoff where a rerun is safe:
# every step but export only reads its inputs and writes its own outputs. Export publishes,
# and is not retried.
RETRY = {"num_retries": 2, "backoff_duration": "30s", "backoff_factor": 2.0}


class Outputs(NamedTuple):
    """What a run hands back (kfp.local returns them; a cluster shows them): the exported
    version, if any, is the registry's version holding the evaluated model's files."""

    dataset: Dataset
    model: Model
    evaluation: Dataset
    report: HTML
    predictions: Dataset


def signature() -> inspect.Signature:
    """The pipeline function's parameters, from the table, as KFP reads them."""
    return inspect.Signature(
        [
            inspect.Parameter(
                p.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=p.kind,
                default=inspect.Parameter.empty if p.default is None else p.default,
            )
            for p in PARAMETERS
        ],
        return_annotation=Outputs,
    )


def docstring() -> str:
    """The pipeline's description and each parameter's help, in the ``Args:`` KFP parses."""
    args = "".join(f"    {p.name}: {p.help}\n" for p in PARAMETERS)
    return (
        "Transfer learning on a folder of class folders of images, gated by a champion.\n\n"
        f"Args:\n{args}"
    )


def make_pipeline(
    gpu_node_selector: dict[str, str] | None = None,
    gpus: int = 1,
    extract_parallelism: int = DEFAULT_EXTRACT_WORKERS,
    retry: bool = True,
    images: tuple[str, str] | None = None,
):
    """The pipeline; extract and train each ask for ``gpus`` GPUs (0: a CPU-only cluster such
    as kind), ``gpu_node_selector`` pins them to labelled GPU nodes, and at most
    ``extract_parallelism`` extract tasks run at once (KFP needs this number when compiling).
    ``retry``: KFP retries every step but export with backoff (a lost node, a storage
    outage); a local run is built without, since kfp.local honours the policy and on one
    machine a failed step fails again, after minutes of backoff. Local runs and clusters
    run this one graph. ``images``: the CPU steps' image and the GPU steps' (extract,
    train), instead of the components' own (``compile --image-repository``; the offline
    container run gives its one CPU image for both).
    """

    def retried(task: dsl.PipelineTask) -> None:
        if retry:
            task.set_retry(**RETRY)

    def on_gpus(task: dsl.PipelineTask) -> None:
        if gpus:
            task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
            kubernetes.add_toleration(
                task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"
            )
        for key, value in (gpu_node_selector or {}).items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)

    def shapes_pipeline(*values) -> Outputs:
        params = dict(zip([p.name for p in PARAMETERS], values, strict=True))

        def pick(*names: str) -> dict:
            return {name: params[name] for name in names}

        augmentation = group("augmentation", params)  # augment, augment_views, augment_*
        split_task = split(
            **pick("data", "seed", "train_fraction", "val_fraction", "max_image_pixels"),
            shard_mb=params["shard_mb"],
        )
        split_task.set_cpu_request("2").set_memory_request("2G").set_memory_limit("4G")
        retried(split_task)
        dataset = split_task.outputs["dataset"]

        backbone = pick("backbone", "weights", "image_size", "seed")
        plan_task = plan(dataset=dataset, extract_workers=params["extract_workers"])
        plan_task.set_cpu_request("1").set_memory_request("512M").set_memory_limit("1G")
        retried(plan_task)

        with dsl.ParallelFor(plan_task.output, parallelism=extract_parallelism) as shards:
            extract_task = extract(
                dataset=dataset, group=shards, groups=params["extract_workers"], **backbone,
                batch_size=params["batch_size"],
                **augmentation, backbone_cache=params["backbone_cache"],
            )  # fmt: skip
            extract_task.set_cpu_request("4").set_memory_request("4G")
            extract_task.set_memory_limit("8G")
            retried(extract_task)
            on_gpus(extract_task)

        train_task = train(
            dataset=dataset, features=dsl.Collected(extract_task.outputs["features"]),
            **backbone, **augmentation, **group("training", params),
            **group("fine_tuning", params), feature_memory_mb=params["feature_memory_mb"],
        )  # fmt: skip
        train_task.set_cpu_request("4").set_memory_request("8G").set_memory_limit("16G")
        retried(train_task)
        on_gpus(train_task)

        eval_task = evaluate(
            dataset=dataset,
            # each consumer its own Collected: KFP refuses one shared by two tasks
            features=dsl.Collected(extract_task.outputs["features"]),
            model=train_task.outputs["model"],
            **pick("registry", "model_name", "serving_sample"),
            **group("gate", params),
        )
        eval_task.set_cpu_request("2").set_memory_request("4G").set_memory_limit("8G")
        retried(eval_task)
        # The gate compares with the registry's production model, which is not an input:
        # a cached decision could be stale.
        eval_task.set_caching_options(False)

        with dsl.If(eval_task.outputs["Output"] == True, name="gate"):  # noqa: E712
            export_task = export(
                dataset=dataset,
                model=train_task.outputs["model"],
                evaluation=eval_task.outputs["evaluation"],
                predictions=eval_task.outputs["predictions"],
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                **pick("registry", "model_name", "verify_export"),
            )
            export_task.set_cpu_request("1").set_memory_request("4G").set_memory_limit("8G")
            export_task.set_caching_options(False)  # a cached export would publish nothing

        if images:
            for task in (split_task, plan_task, eval_task, export_task):
                task.set_container_image(images[0])
            for task in (extract_task, train_task):
                task.set_container_image(images[1])

        return Outputs(
            dataset=dataset,
            model=train_task.outputs["model"],
            evaluation=eval_task.outputs["evaluation"],
            report=eval_task.outputs["report"],
            predictions=eval_task.outputs["predictions"],
        )

    shapes_pipeline.__signature__ = signature()
    shapes_pipeline.__doc__ = docstring()
    return dsl.pipeline(name=PIPELINE_NAME)(shapes_pipeline)


shapes_pipeline = make_pipeline()

if __name__ == "__main__":
    compiler.Compiler().compile(shapes_pipeline, "pipeline.yaml")
    print("wrote pipeline.yaml")
