"""Mutations of what the pipeline accepts: zip archives, secrets in logs, bad input and
registry state caught before any step, image formats and names, the sharded data path,
records read without TensorFlow."""

from mutations.base import ARCHIVE, BAD, EVALUATE, EXPORT, EXPORT_FAULTS, TRAIN, Mutation

INPUTS = [
    # ------------------------------------------------ zip input
    Mutation(
        "zip entry-count limit removed",
        "shapes_pipeline/helpers/archive.py",
        "if len(infos) > limits.entries:",
        "if False:",
        (f"{ARCHIVE}::test_each_archive_limit_refuses_an_archive_past_it",),
    ),
    Mutation(
        "zip total-size limit removed",
        "shapes_pipeline/helpers/archive.py",
        "if total > limits.total_bytes:",
        "if False:",
        (f"{ARCHIVE}::test_each_archive_limit_refuses_an_archive_past_it",),
    ),
    Mutation(
        "zip ratio (bomb) limit removed",
        "shapes_pipeline/helpers/archive.py",
        "info.file_size > limits.ratio * max(info.compress_size, 1)",
        "False",
        (f"{ARCHIVE}::test_each_archive_limit_refuses_an_archive_past_it",),
    ),
    Mutation(
        "zip entries with '..' unpacked",
        "shapes_pipeline/helpers/archive.py",
        '            or ".." in parts\n',
        "",
        (f"{ARCHIVE}::test_unsafe_archives_are_refused_before_anything_is_written",),
    ),
    Mutation(
        "zip symbolic links unpacked",
        "shapes_pipeline/helpers/archive.py",
        "if stat.S_ISLNK(info.external_attr >> 16):",
        "if False:",
        (f"{ARCHIVE}::test_unsafe_archives_are_refused_before_anything_is_written",),
    ),
    # ------------------------------------------------ secrets
    Mutation(
        "every step logs its environment (secrets included)",
        "shapes_pipeline/helpers/step.py",
        "    _last_lap[0] = started\n    try:\n",
        "    _last_lap[0] = started\n    print(dict(__import__('os').environ))\n    try:\n",
        (f"{BAD}::test_a_run_on_odd_files_trains_exports_predicts_and_reruns_from_the_cache",),
    ),
    # ------------------------------------------------ bad input before any step
    Mutation(
        "run starts the pipeline without checking the data first",
        "shapes_pipeline/steps/preflight.py",
        "    classes = split.scan(\n",
        "    classes = {} and split.scan(\n",
        (f"{BAD}::test_the_cli_refuses_bad_files_in_one_line",),
    ),
    Mutation(
        "a model with other classes replaces production without allow_class_change",
        "shapes_pipeline/steps/evaluate.py",
        "        if not allow_class_change:\n",
        "        if False:\n",
        (f"{EVALUATE}::test_a_model_with_other_classes_does_not_replace_production_by_default",),
    ),
    # ------------------------------------------------ registry state before any step
    Mutation(
        "an empty LATEST is taken for no production model",
        "shapes_pipeline/helpers/registry.py",
        '    elif not version:\n        problem = "is empty"\n',
        "    elif not version:\n        return None\n",
        (
            "tests/test_registry.py::test_a_jammed_registry_stops_run_models_and_predict_in_one_line",
        ),
    ),
    Mutation(
        "LATEST naming an unpublished version let through before the run",
        "shapes_pipeline/helpers/registry.py",
        "    if current is not None and current not in published:",
        "    if False:",
        (
            "tests/test_registry.py::test_a_jammed_registry_stops_run_models_and_predict_in_one_line",
        ),
    ),
    Mutation(
        "promote accepts a version that is not published",
        "shapes_pipeline/helpers/registry.py",
        "    if published is None:\n        raise InputError(",
        "    if False:\n        raise InputError(",
        ("tests/test_registry.py::test_promote_rolls_back_and_refuses_what_is_not_published",),
    ),
    # ------------------------------------------------ what an image is, names, archives
    Mutation(
        "a TIFF (or any format Pillow reads) accepted although the model cannot decode it",
        "shapes_pipeline/helpers/dataset.py",
        "if kind not in DECODABLE or",
        "if False and",
        (f"{BAD}::test_bad_files_stop_the_run_before_training_naming_them",),
    ),
    Mutation(
        "images over max_image_pixels accepted",
        "shapes_pipeline/helpers/dataset.py",
        "if width * height > max_pixels:",
        "if False:",
        (f"{BAD}::test_bad_files_stop_the_run_before_training_naming_them",),
    ),
    Mutation(
        "names with control characters or bytes that are not UTF-8 accepted",
        "shapes_pipeline/steps/split.py",
        "if not entry.name.isprintable():",
        "if False:",
        (f"{BAD}::test_names_that_could_break_a_step_or_a_log_line_are_refused",),
    ),
    Mutation(
        "links leading out of the data folder followed",
        "shapes_pipeline/steps/split.py",
        "if entry.is_symlink() and not entry.resolve().is_relative_to(root.resolve()):",
        "if False:",
        (f"{BAD}::test_names_that_could_break_a_step_or_a_log_line_are_refused",),
    ),
    Mutation(
        "zip ratio checked per entry only, not for the archive as a whole",
        "shapes_pipeline/helpers/archive.py",
        "if total > limits.ratio * max(packed, 1) and total > limits.ratio_from_bytes:",
        "if False:",
        (f"{ARCHIVE}::test_the_ratio_limit_also_holds_for_the_archive_as_a_whole",),
    ),
    Mutation(
        "encrypted zip entries let through to a traceback",
        "shapes_pipeline/helpers/archive.py",
        "    if info.flag_bits & 0x1:",
        "    if False:",
        (f"{ARCHIVE}::test_archives_that_cannot_be_unpacked_are_one_line",),
    ),
    Mutation(
        "published versions keep the exporting process's umask",
        "shapes_pipeline/helpers/storage.py",
        "        _readable_by_all(staging)\n",
        "",
        (f"{EXPORT}::test_published_versions_are_readable_by_other_users",),
    ),
    Mutation(
        "staging left by a killed export is never removed",
        "shapes_pipeline/steps/export.py",
        "    for left in storage.remove_stale_staging(registry_path(registry, model_name)):",
        "    for left in []:",
        (f"{EXPORT_FAULTS}::test_staging_left_by_a_killed_export_is_removed_once_an_hour_old",),
    ),
    # ------------------------------------------------ the sharded data path (issue 15)
    Mutation(
        "each replica divides its loss by its own share of the batch, not the global batch",
        "shapes_pipeline/helpers/fit.py",
        "loss = tf.reduce_sum(losses) / global_size",
        "loss = tf.reduce_sum(losses) / size",
        ("tests/test_shards.py::test_two_devices_train_as_one",),
    ),
    Mutation(
        "augmentation seeded per extract group, not per shard",
        "shapes_pipeline/steps/extract.py",
        "done = [job.run(p, shard, features) for p, shard in mine]",
        "done = [job.run(group, shard, features) for p, shard in mine]",
        ("tests/test_shards.py::test_one_or_two_extract_workers_give_the_same_features_and_head",),
    ),
    Mutation(
        "every extract task reads every shard, not only its group's",
        "shapes_pipeline/steps/extract.py",
        "mine = zip(positions, shards.of_group(index, group, groups), strict=True)",
        'mine = zip(positions, index["shards"])',
        ("tests/test_shards.py::test_one_or_two_extract_workers_give_the_same_features_and_head",),
    ),
    Mutation(
        "training accepts feature artifacts that miss a group's shards",
        "shapes_pipeline/helpers/shards.py",
        "    if got != expected:\n",
        "    if False:\n",
        ("tests/test_shards.py::test_training_refuses_features_that_miss_a_group",),
    ),
    Mutation(
        "evaluation skips the serving_default check of its sample",
        "shapes_pipeline/steps/evaluate.py",
        "if served_row.argmax() != expected.argmax() or difference > TOLERANCE:",
        "if False:",
        (f"{EVALUATE}::test_serving_that_differs_from_the_features_path_is_refused",),
    ),
    Mutation(
        "evaluation trusts the feature shards' rows without checking their labels",
        "shapes_pipeline/steps/evaluate.py",
        'if None in where or (batch["label"] != y_true[where]).any():',
        "if None in where:",
        (f"{EVALUATE}::test_a_manifest_whose_labels_differ_from_the_shards_is_refused",),
    ),
    Mutation(
        "extract on several devices puts the rows of a batch back in another order",
        "shapes_pipeline/steps/extract.py",
        "parts = np.array_split(np.asarray(x), n)",
        "parts = np.array_split(np.asarray(x)[::-1], n)",
        ("tests/test_shards.py::test_extract_on_two_devices_gives_one_devices_features",),
    ),
    Mutation(
        "a fine-tuned model evaluated through the frozen backbone's stale features",
        "shapes_pipeline/steps/evaluate.py",
        '    if training.get("fine_tune_kept"):\n        # Fine-tuning changed',
        "    if False:\n        # Fine-tuning changed",
        (f"{TRAIN}::test_fine_tuning_that_improves_validation_is_kept",),
    ),
    # ------------------------------------------------ records without TensorFlow
    Mutation(
        "TFRecord checksums masked with another constant (TensorFlow would refuse the shards)",
        "shapes_pipeline/helpers/tfrecord.py",
        "+ 0xA282EAD8) & 0xFFFFFFFF",
        "+ 0xA282EAD9) & 0xFFFFFFFF",
        ("tests/test_tfrecord.py::test_records_are_byte_for_byte_tensorflows",),
    ),
    Mutation(
        "split loads TensorFlow again",
        "shapes_pipeline/steps/split.py",
        "from shapes_pipeline.helpers.facts import SplitFacts\n",
        "from shapes_pipeline.helpers.facts import SplitFacts\nimport tensorflow  # noqa\n",
        ("tests/test_tfrecord.py::test_split_does_not_import_tensorflow",),
    ),
    Mutation(
        "a step's phases carry over from the step before",
        "shapes_pipeline/helpers/step.py",
        "    _laps.clear()\n",
        "",
        ("tests/test_step.py::test_each_step_starts_its_laps_afresh",),
    ),
]
