"""The Kubeflow pipeline: split -> plan -> extract (fanned out) -> train -> evaluate ->
export (only past the gate).

Split writes the data set as TFRecord shards; plan turns ``extract_workers`` into groups of
shards; ``dsl.ParallelFor`` runs one extract task (the frozen backbone, on a GPU) per
group, and ``dsl.Collected`` hands every group's feature shards to train and evaluate.

The components (``components/kfp_components.py``) are thin wrappers around the steps.
``shapes_pipeline`` is the pipeline as KFP's own tools expect it
(``kfp dsl compile --py pipeline.py --output pipeline.yaml``); ``make_pipeline`` builds it
for a cluster's GPUs. ``python pipeline.py`` writes ``pipeline.yaml``. The command line is
``components/cli.py``; the local run, ``components/local_run.py``.
"""

from typing import NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import HTML, Dataset, Model

from components.dataset import MAX_PIXELS  # the defaults, beside what they bound
from components.facts import MILD_AUGMENTATION
from components.kfp_components import (
    evaluate,
    export,
    extract,
    plan,
    split,
    train,
)
from components.shards import DEFAULT_FEATURE_MEMORY_MB, DEFAULT_SHARD_MB

PIPELINE_NAME = "shapes-transfer-learning"
# A failed pod (a storage 5xx, a lost node) is retried with backoff where a rerun is safe:
# every step but export only reads its inputs and writes its own outputs. Export publishes,
# and is not retried.
RETRY = {"num_retries": 2, "backoff_duration": "30s", "backoff_factor": 2.0}
DEFAULT_EXTRACT_WORKERS = 2


def make_pipeline(
    gpu_node_selector: dict[str, str] | None = None,
    gpus: int = 1,
    extract_parallelism: int = DEFAULT_EXTRACT_WORKERS,
):
    """The pipeline; extract and train each ask for ``gpus`` GPUs (0: a CPU-only cluster such
    as kind), ``gpu_node_selector`` pins them to labelled GPU nodes, and at most
    ``extract_parallelism`` extract tasks run at once (KFP needs this number when compiling).
    Local runs and clusters run this one graph.
    """

    def on_gpus(task: dsl.PipelineTask) -> None:
        if gpus:
            task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
            kubernetes.add_toleration(
                task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"
            )
        for key, value in (gpu_node_selector or {}).items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)

    @dsl.pipeline(name=PIPELINE_NAME)
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
        augment_rotation: float = MILD_AUGMENTATION["rotation"],
        augment_zoom: float = MILD_AUGMENTATION["zoom"],
        augment_translation: float = MILD_AUGMENTATION["translation"],
        augment_contrast: float = MILD_AUGMENTATION["contrast"],
        augment_flip_horizontal: bool = MILD_AUGMENTATION["flip_horizontal"],
        augment_flip_vertical: bool = MILD_AUGMENTATION["flip_vertical"],
        fine_tune_layers: int = 0,
        fine_tune_lr: float = 1e-4,
        fine_tune_epochs: int = 20,
        train_fraction: float = 0.8,
        val_fraction: float = 0.1,
        min_accuracy: float = 0.9,
        max_regression: float = 0.0,
        allow_class_change: bool = False,
        max_image_pixels: int = MAX_PIXELS,
        shard_mb: float = DEFAULT_SHARD_MB,
        extract_workers: int = DEFAULT_EXTRACT_WORKERS,
        feature_memory_mb: int = DEFAULT_FEATURE_MEMORY_MB,
        backbone_cache: str = "",
        serving_sample: int = 256,
        gate_sample: int = 5000,
        verify_export: str = "hash",
        model_name: str = "shapes-classifier",
    ) -> Outputs:
        """Transfer learning on a folder of class folders of images, gated by a champion.

        Args:
            data: The images: a folder (or gs:// prefix, or .zip) with one sub-folder of
                images per class. A local run without it uses demo shapes.
            registry: Where models are published: a folder or gs:// URI holding
                <model_name>/<version>/ and <model_name>/LATEST (the production version).
            backbone: The keras.applications model to transfer from, e.g. MobileNet,
                ResNet50, InceptionResNetV2.
            weights: The backbone's weights: imagenet, none (random), auto (imagenet if
                it can be downloaded, else random with a warning), or a local or gs://
                weights file of the backbone without its top.
            image_size: Images are resized to this many pixels square.
            epochs: The most epochs the head trains; early stopping usually ends sooner.
            batch_size: Images per training step.
            patience: Epochs without a better validation loss before training stops.
            seed: Seed of the split and of training; the same seed, the same model.
            augment: Also train on augmented views of the training images.
            augment_views: Augmented views per training image (with augment).
            augment_rotation: Largest random rotation, in degrees either way (0: none).
            augment_zoom: Largest random zoom in or out, as a fraction (0: none).
            augment_translation: Largest random shift, as a fraction of the image size.
            augment_contrast: Largest random contrast change, as a fraction (0: none).
            augment_flip_horizontal: Random left-right mirroring; off by default, as a
                mirrored digit or letter is another one.
            augment_flip_vertical: Random upside-down flips; only for data that keeps its
                class upside down (drawings of shapes: presets/augment-shapes.yaml).
            fine_tune_layers: After the head converges, also train the backbone's top
                this many weight layers (batch norm stays frozen); 0 is off.
            fine_tune_lr: Fine-tuning's peak learning rate: reached by a linear warm-up
                over its first epoch, then decayed to 0 along a cosine.
            fine_tune_epochs: The most epochs of fine-tuning (the schedule's length);
                early stopping on validation loss may end it sooner.
            train_fraction: The part of each class for training (validation included);
                the rest is the test split.
            val_fraction: The part of each class's training images kept for validation
                (early stopping); 0 trains all epochs and keeps the last.
            min_accuracy: The least test accuracy a model needs to be published.
            max_regression: How much worse than the production model, on the same test
                images, a new model may be and still replace it.
            allow_class_change: Let a model whose classes differ from the production
                model's replace it (otherwise the gate refuses it).
            max_image_pixels: The largest image accepted, in pixels (width x height);
                larger ones are refused before training, naming the file.
            shard_mb: Target size of one TFRecord shard of the data set, in MB.
            extract_workers: Feature extraction tasks (each reads its share of the
                shards, on its own GPU); never more than there are shards. A local run
                defaults to 1: its tasks share one machine, where each more repeats
                TensorFlow's start and holds another copy of the backbone in memory.
            feature_memory_mb: Training holds the extracted features in memory up to this
                many MB, and streams them from their shards above it.
            backbone_cache: A folder or gs:// URI that keeps traced backbones between
                runs, so a run that finds its backbone there loads it instead of building
                and tracing it (scheduled retraining builds the same one each time); empty
                is off. Keyed by the backbone, its weights file's content (or the seed of
                random weights), image size, precision and versions; ImageNet weights that
                Keras downloads are not cached. Entries are never replaced or removed.
            serving_sample: Test images (a stratified sample) scored through the served
                model's serving_default from their bytes, which must match evaluation.
            gate_sample: The production model is scored on the test images, or on a
                stratified sample of this many when there are more.
            verify_export: How export proves it publishes the evaluated model: hash (the
                files' content hash must be the one evaluate recorded) or reload (also
                load them in a fresh process and rescore evaluate's serving sample).
            model_name: The model's name in the registry.
        """
        augmentation = {
            "augment_rotation": augment_rotation,
            "augment_zoom": augment_zoom,
            "augment_translation": augment_translation,
            "augment_contrast": augment_contrast,
            "augment_flip_horizontal": augment_flip_horizontal,
            "augment_flip_vertical": augment_flip_vertical,
        }
        split_task = split(
            data=data, seed=seed, train_fraction=train_fraction, val_fraction=val_fraction,
            max_image_pixels=max_image_pixels, shard_mb=shard_mb,
        )  # fmt: skip
        split_task.set_cpu_request("2").set_memory_request("2G").set_memory_limit("4G")
        split_task.set_retry(**RETRY)
        dataset = split_task.outputs["dataset"]

        training = {
            "dataset": dataset, "backbone": backbone, "weights": weights,
            "image_size": image_size, "batch_size": batch_size, "seed": seed,
            "augment": augment, **augmentation, "epochs": epochs, "patience": patience,
            "fine_tune_layers": fine_tune_layers, "fine_tune_lr": fine_tune_lr,
            "fine_tune_epochs": fine_tune_epochs, "feature_memory_mb": feature_memory_mb,
        }  # fmt: skip
        plan_task = plan(dataset=dataset, extract_workers=extract_workers)
        plan_task.set_cpu_request("1").set_memory_request("512M").set_memory_limit("1G")
        plan_task.set_retry(**RETRY)

        with dsl.ParallelFor(plan_task.output, parallelism=extract_parallelism) as group:
            extract_task = extract(
                dataset=dataset, group=group, groups=extract_workers, backbone=backbone,
                weights=weights, image_size=image_size, batch_size=batch_size, seed=seed,
                augment=augment, augment_views=augment_views, **augmentation,
                backbone_cache=backbone_cache,
            )  # fmt: skip
            extract_task.set_cpu_request("4").set_memory_request("4G")
            extract_task.set_memory_limit("8G").set_retry(**RETRY)
            on_gpus(extract_task)

        train_task = train(**training, features=dsl.Collected(extract_task.outputs["features"]))
        train_task.set_cpu_request("4").set_memory_request("8G").set_memory_limit("16G")
        train_task.set_retry(**RETRY)
        on_gpus(train_task)

        eval_task = evaluate(
            dataset=dataset,
            # each consumer its own Collected: KFP refuses one shared by two tasks
            features=dsl.Collected(extract_task.outputs["features"]),
            model=train_task.outputs["model"],
            registry=registry,
            model_name=model_name,
            min_accuracy=min_accuracy,
            max_regression=max_regression,
            allow_class_change=allow_class_change,
            serving_sample=serving_sample,
            gate_sample=gate_sample,
        )
        eval_task.set_cpu_request("2").set_memory_request("4G").set_memory_limit("8G")
        eval_task.set_retry(**RETRY)
        # The gate compares with the registry's production model, which is not an input:
        # a cached decision could be stale.
        eval_task.set_caching_options(False)

        with dsl.If(eval_task.outputs["Output"] == True, name="gate"):  # noqa: E712
            export_task = export(
                dataset=dataset,
                model=train_task.outputs["model"],
                evaluation=eval_task.outputs["evaluation"],
                predictions=eval_task.outputs["predictions"],
                registry=registry,
                model_name=model_name,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                verify_export=verify_export,
            )
            export_task.set_cpu_request("1").set_memory_request("4G").set_memory_limit("8G")
            export_task.set_caching_options(False)  # a cached export would publish nothing

        return Outputs(
            dataset=dataset,
            model=train_task.outputs["model"],
            evaluation=eval_task.outputs["evaluation"],
            report=eval_task.outputs["report"],
            predictions=eval_task.outputs["predictions"],
        )

    return shapes_pipeline


class Outputs(NamedTuple):
    """What a run hands back (kfp.local returns them; a cluster shows them): the exported
    version, if any, is the registry's version holding the evaluated model's files."""

    dataset: Dataset
    model: Model
    evaluation: Dataset
    report: HTML
    predictions: Dataset


shapes_pipeline = make_pipeline()

if __name__ == "__main__":
    compiler.Compiler().compile(shapes_pipeline, "pipeline.yaml")
    print("wrote pipeline.yaml")
