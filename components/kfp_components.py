"""The pipeline's KFP components: each a thin wrapper that runs one step of
``shapes_pipeline.steps`` in its container and turns the step's result into KFP artifacts.

The project's images have the library installed, so a component's body imports its step
from ``shapes_pipeline``: KFP ships only the body's source to the container. A component
takes the flat parameters a user sees in KFP's UI and hands its step the typed groups,
each built from the parameters of its name (``Settings.of(locals())``). ``pipeline.py``
chains them.
"""

from typing import List  # noqa: UP035 (KFP reads typing.List)

from kfp import dsl
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

from shapes_pipeline.helpers.settings import IMAGE_REPOSITORY, IMAGE_TAG

# The images the steps run in by default (compile's --image-repository and --image-tag
# set others on the tasks).
CPU_IMAGE = f"{IMAGE_REPOSITORY}-cpu:{IMAGE_TAG}"
GPU_IMAGE = f"{IMAGE_REPOSITORY}-gpu:{IMAGE_TAG}"


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def split(
    data: str,
    seed: int,
    train_fraction: float,
    val_fraction: float,
    max_image_pixels: int,
    shard_mb: float,
    dataset: Output[Dataset],
):
    from shapes_pipeline.helpers.step import step

    with step("split", dataset.metadata):
        from shapes_pipeline.steps.split import split_dataset

        facts = split_dataset(
            data, dataset.path, seed=seed, train_fraction=train_fraction,
            val_fraction=val_fraction, max_pixels=max_image_pixels, shard_mb=shard_mb,
        )  # fmt: skip
        dataset.metadata.update(facts)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan(dataset: Input[Dataset], extract_workers: int) -> List[int]:  # noqa: UP006
    """The extract groups: one per worker, never more than there are shards."""
    from shapes_pipeline.helpers.step import step

    with step("plan", {}):
        from shapes_pipeline.helpers.shards import groups

        return groups(dataset.path, extract_workers)


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def extract(
    dataset: Input[Dataset],
    group: int,
    groups: int,
    backbone: str,
    weights: str,
    image_size: int,
    batch_size: int,
    seed: int,
    augment: bool,
    augment_views: int,
    augment_rotation: float,
    augment_zoom: float,
    augment_translation: float,
    augment_contrast: float,
    augment_flip_horizontal: bool,
    augment_flip_vertical: bool,
    backbone_cache: str,
    features: Output[Dataset],
):
    from shapes_pipeline.helpers.step import step

    with step("extract", features.metadata, group=group):
        from shapes_pipeline.helpers.settings import AugmentSettings
        from shapes_pipeline.steps.extract import extract

        facts = extract(
            dataset.path, features.path, group=group, groups=groups, backbone=backbone,
            weights=weights, image_size=image_size, batch_size=batch_size, seed=seed,
            augment=AugmentSettings.of(locals()), cache=backbone_cache,
        )  # fmt: skip
        features.metadata.update({k: v for k, v in facts.items() if k != "shards"})


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    features: Input[List[Dataset]],  # noqa: UP006
    backbone: str,
    weights: str,
    image_size: int,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    augment: bool,
    augment_views: int,
    augment_rotation: float,
    augment_zoom: float,
    augment_translation: float,
    augment_contrast: float,
    augment_flip_horizontal: bool,
    augment_flip_vertical: bool,
    fine_tune_layers: int,
    fine_tune_lr: float,
    fine_tune_epochs: int,
    feature_memory_mb: int,
    model: Output[Model],
):
    from shapes_pipeline.helpers.step import step

    with step("train", model.metadata):
        from shapes_pipeline.helpers.settings import (
            AugmentSettings,
            FineTuneSettings,
            TrainingSettings,
        )
        from shapes_pipeline.steps.train import train

        facts = train(
            dataset.path, [f.path for f in features], model.path, backbone=backbone,
            weights=weights, image_size=image_size, seed=seed,
            training=TrainingSettings.of(locals()), augment=AugmentSettings.of(locals()),
            fine_tuning=FineTuneSettings.of(locals()),
            feature_memory_mb=feature_memory_mb,
        )  # fmt: skip
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
    allow_class_change: bool,
    serving_sample: int,
    gate_sample: int,
    features: Input[List[Dataset]],  # noqa: UP006
) -> bool:
    """Returns the gate's decision: export or not (see ``shapes_pipeline.steps.evaluate.decide``);
    ``features``: every extract task's."""
    from shapes_pipeline.helpers.step import step

    with step("evaluate", evaluation.metadata):
        from shapes_pipeline.helpers.settings import GateSettings
        from shapes_pipeline.steps.evaluate import evaluate

        result = evaluate(
            dataset.path,
            [f.path for f in features],
            model.path,
            predictions_path=predictions.path,
            report_path=report.path,
            evaluation_path=evaluation.path,
            summary_path=summary.path,
            registry_uri=registry,
            model_name=model_name,
            gate=GateSettings.of(locals()),
            serving_sample=serving_sample,
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
    verify_export: str,
    registered_model: Output[Model],
):
    import json

    from shapes_pipeline.helpers.step import step

    with step("export", registered_model.metadata):
        from shapes_pipeline.steps.export import export

        facts = export(
            model.path,
            dataset.path,
            evaluation.path,
            predictions.path,
            registry=registry,
            model_name=model_name,
            pipeline_run={"id": run_id, "name": run_name},
            verify=verify_export,
        )
        with open(registered_model.path, "w") as f:
            json.dump(facts, f, indent=2)
        registered_model.metadata.update(facts)
