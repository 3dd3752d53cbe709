"""What the steps hand each other and the run's summary, typed in one place.

They travel as JSON (KFP artifact metadata, ``split.json``, ``training.json``,
``evaluation.json``, ``metadata.json``, ``summary.json``), so they are ``TypedDict``s:
plain dicts at run time, checked names and types for readers and type checkers.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class SplitFacts(TypedDict):
    """The split step's result (``split.json`` in the data set)."""

    source: str
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images
    manifest_sha256: str
    shards: int
    shard_mb: float
    warnings: list[str]


class Augmentation(TypedDict):
    """The random transforms of ``augment``, as the pipeline's ``augment_*`` parameters."""

    rotation: float  # degrees, either way
    zoom: float  # fraction, in or out
    translation: float  # fraction of the size, each axis
    contrast: float  # fraction
    flip_horizontal: bool
    flip_vertical: bool


# Mild and label-preserving for most images: no flips (a mirrored digit or letter is
# another one), small turns, zooms and shifts.
MILD_AUGMENTATION = Augmentation(
    rotation=10.0, zoom=0.1, translation=0.1, contrast=0.1, flip_horizontal=False,
    flip_vertical=False,
)  # fmt: skip


class Shard(TypedDict):
    """One image shard of a data set (``shards.json``)."""

    file: str  # relative to the data set, e.g. ``train/train-00000.tfrecord``
    split: str
    count: int
    bytes: int
    classes: dict[str, int]  # class -> images in this shard


class ShardIndex(TypedDict):
    shard_mb: float
    classes: list[str]
    shards: list[Shard]


class FeatureShard(TypedDict):
    """One feature shard an extract task wrote, from the image shard ``source``."""

    file: str
    source: str
    split: str
    count: int  # records: images times views
    bytes: int
    dtype: str


class FeatureIndex(TypedDict):
    """An extract task's output (``features.json``)."""

    backbone: str
    weights: str
    image_size: int
    dim: int
    augment_views: int  # 0: none
    augmentation: Augmentation | None
    group: int
    groups: int
    shards: list[FeatureShard]
    serving: str | None  # group 0's: the serving SavedModel, its head untrained (train's)
    devices: list[str]
    precision: str
    seconds: float
    images: int
    warnings: list[str]
    # with a backbone cache: "loaded" from it, or "built" (and stored); None: not cached
    backbone_cache: str | None


class TrainingFacts(TypedDict):
    """The train step's result (``training.json`` in the model artifact)."""

    backbone: str
    weights: str  # what was used: "imagenet", "none" or the weights file
    image_size: int
    classes: list[str]
    devices: list[str]
    replicas: int  # devices training ran on (MirroredStrategy with several GPUs)
    precision: str
    caching: str
    features_in_memory: bool  # False: streamed from the feature shards
    augment: bool
    augmentation: Augmentation | None
    early_stopping: bool  # False without a validation split: the last epoch is kept
    epoch_limit: int
    epochs_run: int
    head_epochs: int
    best_epoch: int  # 1-based, over head and fine-tuning epochs together
    best_val_loss: float | None
    build_seconds: float
    feature_seconds: float
    head_seconds: float
    training_seconds: float
    warnings: list[str]
    packages: dict[str, str | None]
    fine_tune_layers: NotRequired[int]
    fine_tune_epochs: NotRequired[int]
    fine_tune_kept: NotRequired[bool]
    fine_tune_seconds: NotRequired[float]
    save_seconds: NotRequired[float]  # in the step's metadata and the summary only


class Gate(TypedDict):
    """The champion/challenger decision evaluate makes and export obeys."""

    passed: bool
    reason: str
    champion_version: str | None
    champion_uri: str | None
    champion_accuracy: float | None
    min_accuracy: float
    max_regression: float
    classes_added: list[str]  # this model's classes that production lacks
    classes_lost: list[str]  # production's classes that this model lacks
    compared_images: int  # test images both models were scored on (0: no production model)
    compared_sampled: bool  # a stratified sample of the test split (at most gate_sample)
    challenger_accuracy: float | None  # this model's accuracy on those images


class Evaluation(TypedDict):
    """The evaluate step's result (``evaluation.json``)."""

    test_accuracy: float
    accuracy_ci95: tuple[float, float]
    classes: list[str]
    confusion_matrix: list[list[int]]  # rows true, columns predicted, in ``classes`` order
    classification_report: dict  # scikit-learn's output_dict
    n_test: int
    data: SplitFacts
    training: TrainingFacts
    model_sha256: str  # the evaluated model files' hash: what export must publish
    serving_check: dict  # images scored through serving_default, and the largest difference
    warnings: list[str]
    gate: Gate


class Published(TypedDict):
    """A registry version's ``metadata.json``, which export writes last."""

    model_name: str
    version: str
    uri: str
    content_sha256: str
    serving_uri: str
    created: str
    backbone: str
    weights: str
    image_size: int
    classes: list[str]
    metrics: dict[str, float | list[float]]
    manifest_sha256: str
    gate: Gate
    verification: dict
    pipeline_run: dict | None
    packages: dict


class Summary(TypedDict):
    """What ``run`` writes to ``summary.json`` and prints."""

    parameters: dict  # every pipeline parameter, as the run resolved it
    test_accuracy: float
    accuracy_ci95: tuple[float, float]
    classes: list[str]
    confusion_matrix: list[list[int]]
    classification_report: dict
    gate: Gate
    exported: bool
    model_uri: str | None
    report_uri: str
    report_html: str
    predictions_uri: str
    trained_model_uri: str
    dataset_uri: str
    tensorboard_logdir: str
    backbone: str
    weights: str
    warnings: list[str]
    epochs_run: int
    best_epoch: int
    early_stopping: bool
    training_outcome: str
    caching: str
    precision: str
    devices: list[str]
    training: TrainingFacts
    timings_s: dict[str, float]
    peak_memory_mb: dict[str, int | None]
    phase_seconds: dict[str, dict[str, float] | None]  # step -> step.PHASES -> seconds
    run_dir: str
    logs: dict[str, str]
    reused: list[str]
