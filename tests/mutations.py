"""The bugs `make mutation` plants, one at a time, in a copy of the code: each is a way the
product could be wrong while still running, and each must make one of its tests fail.

``old`` must occur exactly once in ``file`` (the runner refuses a stale entry). ``repeat``
runs the tests several times, for protections against races: the race tests force the
interleaving, so they must kill the mutation every time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    repeat: int = 1


EXPORT = "tests/test_export.py"
EXPORT_FAULTS = "tests/test_export_faults.py"
TRAIN = "tests/test_train.py"
SPLIT = "tests/test_split.py"
EVALUATE = "tests/test_evaluate.py"
BAD = "tests/test_bad_input.py"
ARCHIVE = "tests/test_archive.py"
E2E = "tests/test_e2e.py"
CACHE = "tests/test_backbone_cache.py"

MUTATIONS = [
    # ------------------------------------------------ registry: races and publishing
    Mutation(
        "local LATEST swapped without the lock",
        "components/storage.py",
        "        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes\n",
        "",
        (f"{EXPORT_FAULTS}::test_two_gates_racing_for_production[local]",),
        repeat=5,
    ),
    Mutation(
        "GCS LATEST written without its generation precondition",
        "components/storage.py",
        "bucket.blob(name).upload_from_string(text, if_generation_match=generation)",
        "bucket.blob(name).upload_from_string(text)",
        (f"{EXPORT_FAULTS}::test_two_gates_racing_for_production[gcs]",),
        repeat=5,
    ),
    Mutation(
        "local version published over an existing one",
        "components/storage.py",
        "os.rename(staging, target)  # fails where",
        "shutil.copytree(staging, target, dirs_exist_ok=True)  # fails where",
        (f"{EXPORT_FAULTS}::test_two_writers_racing_for_the_same_version_name[local]",),
        repeat=5,
    ),
    Mutation(
        "GCS version marker written without its generation precondition",
        "components/storage.py",
        """        bucket.blob(f"{prefix}/{marker}").upload_from_filename(
            str(root / marker), if_generation_match=0
        )""",
        """        bucket.blob(f"{prefix}/{marker}").upload_from_filename(str(root / marker))""",
        (f"{EXPORT_FAULTS}::test_two_writers_racing_for_the_same_version_name[gcs]",),
        repeat=5,
    ),
    # ------------------------------------------------ export's verification
    Mutation(
        "verification compares each image with another image's row",
        "components/verify.py",
        "path, row = test[i], served[rows[i]]",
        "path, row = test[i], served[rows[(i + 1) % len(rows)]]",
        (f"{EXPORT}::test_verify_holds_the_model_to_the_evaluation_within_1e_4",),
    ),
    Mutation(
        "verification runs in the exporting process",
        "components/export.py",
        "reloaded = verify_in_fresh_process(tmp, dataset_dir, predictions_path, sample)",
        "reloaded = __import__('components.verify').verify.verify("
        "tmp, dataset_dir, predictions_path, sample)",
        (f"{EXPORT}::test_verification_runs_on_the_files_in_a_fresh_process",),
    ),
    Mutation(
        "the content hash taken of the original folder, not of the copy to publish",
        "components/export.py",
        "content = artifact.tree_sha256(tmp)",
        "content = artifact.served_files_sha256(model_dir)",
        (f"{EXPORT}::test_verification_checks_the_staged_copy_not_the_original",),
    ),
    # ------------------------------------------------ training
    Mutation(
        "training labels shuffled against their images",
        "components/shards.py",
        'return joined["features"][order], joined["label"][order], joined["row"][order]',
        'return joined["features"][order], np.random.default_rng(0).permutation('
        'joined["label"][order]), joined["row"][order]',
        (f"{E2E}::test_training_learns_the_shapes",),
    ),
    Mutation(
        "early stopping on the test split instead of val",
        "components/train.py",
        "found[split] = shards.feature_shards(feature_dirs, split, dataset_dir)",
        "found[split] = shards.feature_shards(feature_dirs, "
        "{'val': 'test'}.get(split, split), dataset_dir)",
        (f"{TRAIN}::test_training_never_reads_the_test_split",),
    ),
    Mutation(
        "fine-tuned weights always kept, even when validation got worse",
        "components/train.py",
        'kept = not validated or min(stage["val_loss"]) < min(history["val_loss"])',
        "kept = True",
        (f"{TRAIN}::test_fine_tuning_that_worsens_validation_gives_back_the_head_only_model",),
    ),
    Mutation(
        "fine-tuned weights never kept, even when validation got better",
        "components/train.py",
        'kept = not validated or min(stage["val_loss"]) < min(history["val_loss"])',
        "kept = False",
        (f"{TRAIN}::test_fine_tuning_that_improves_validation_is_kept",),
    ),
    Mutation(
        "train's model keeps the untrained head of extract's serving model",
        "components/serving.py",
        "        values[key] = weight.astype(values[key].dtype)\n",
        "        pass\n",
        ("tests/test_serving_model.py",),
    ),
    Mutation(
        "the packed backbone serves in training mode (batch norm on the batch's statistics)",
        "components/model.py",
        "network.stateless_call(values[:trainable], values[trainable:], x, training=False)",
        "network.stateless_call(values[:trainable], values[trainable:], x, training=True)",
        ("tests/test_serving_model.py",),
    ),
    Mutation(
        "train builds the backbone again when it only trains the head",
        "components/train.py",
        "if fine_tune_layers:  # fine-tuning changes the backbone",
        "if True:  # fine-tuning changes the backbone",
        (f"{TRAIN}::test_training_only_the_head_builds_no_backbone",),
    ),
    Mutation(
        "decoder returns all-zero pixels for grey, grey+alpha, RGBA and 16-bit images",
        "components/model.py",
        "    pixels = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)\n",
        "    pixels = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)\n"
        "    native = tf.shape(tf.io.decode_image(image_bytes, expand_animations=False))[-1]\n"
        "    pixels = pixels * tf.cast(native == 3, pixels.dtype)\n",
        ("tests/test_decode.py",),
    ),
    # ------------------------------------------------ split
    Mutation(
        "split ignores its seed and always uses 230",
        "components/split.py",
        "train, test = notebook_split(files, seed, train_fraction)",
        "train, test = notebook_split(files, 230, train_fraction)",
        (f"{SPLIT}::test_split_step_writes_the_pinned_split",),
    ),
    Mutation(
        "split rule: files not sorted before the shuffle",
        "components/split.py",
        "ordered = sorted(files)",
        "ordered = list(files)",
        (f"{SPLIT}::test_split_of_a_known_file_list_is_pinned",),
    ),
    Mutation(
        "split rule: the cut rounded instead of truncated",
        "components/split.py",
        "cut = int(train_fraction * len(ordered))",
        "cut = round(train_fraction * len(ordered))",
        (f"{SPLIT}::test_split_of_a_known_file_list_is_pinned",),
    ),
    Mutation(
        "leak check: the same image in training and test data let through",
        "components/split.py",
        'if "test" in {split_of[k] for k in group} and len({split_of[k] for k in group}) > 1:',
        "if False:",
        (f"{SPLIT}::test_leaks_are_errors_naming_the_files",),
    ),
    Mutation(
        "leak check: the same image in two classes let through",
        "components/split.py",
        "if len({label for label, _ in group}) > 1:",
        "if False:",
        (f"{SPLIT}::test_leaks_are_errors_naming_the_files",),
    ),
    Mutation(
        "images not decoded before the split (a truncated file gets through)",
        "components/dataset.py",
        "            image.load()\n",
        "            pass\n",
        (f"{SPLIT}::test_bad_input_names_the_path_and_writes_nothing",),
    ),
    # ------------------------------------------------ evaluation and gate
    Mutation(
        "evaluate swaps the probabilities of two images of one class",
        "components/evaluate.py",
        "    y_pred = probabilities.argmax(axis=1)\n",
        "    probabilities[[0, 1]] = probabilities[[1, 0]]\n"
        "    y_pred = probabilities.argmax(axis=1)\n",
        (f"{EVALUATE}::test_each_prediction_is_its_own_images_score",),
    ),
    Mutation(
        "the model scores images in sorted order, not in the order it was given",
        "components/serving.py",
        "encoded = [x if isinstance(x, bytes) else Path(x).read_bytes() for x in items]",
        "encoded = [x if isinstance(x, bytes) else Path(x).read_bytes() for x in sorted(items)]",
        (f"{EVALUATE}::test_each_prediction_is_its_own_images_score",),
    ),
    Mutation(
        "the production model scored on the test images in another order than their labels",
        "components/evaluate.py",
        'theirs = np.array([scored["probabilities"][rows[i]].argmax() for i in compared])',
        'theirs = np.array([scored["probabilities"][rows[i]].argmax() for i in compared[::-1]])',
        (f"{EVALUATE}::test_champion_is_scored_on_this_runs_test_images",),
    ),
    Mutation(
        "the gate ignores the production model's accuracy",
        "components/evaluate.py",
        'if mine < champion["accuracy"] - max_regression:',
        "if False:",
        (f"{EVALUATE}::test_gate_decision",),
    ),
    Mutation(
        "the evaluation's self-check of accuracy against the confusion matrix skipped",
        "components/evaluate.py",
        'if not math.isclose(evaluation["test_accuracy"], np.trace(matrix) / matrix.sum()):',
        "if False:",
        (f"{EVALUATE}::test_inconsistent_evaluation_is_an_error",),
    ),
    Mutation(
        "export publishes although the gate failed",
        "components/export.py",
        '    if not gate["passed"]:\n',
        "    if False:\n",
        (f"{EXPORT}::test_export_refuses_a_failed_gate_and_a_moved_production",),
    ),
    Mutation(
        "predict prints each image with another image's probabilities",
        "components/cli_models.py",
        "for path, row in zip(images, probabilities, strict=True)",
        "for path, row in zip(images, probabilities[::-1], strict=True)",
        (f"{E2E}::test_run_from_gcs_to_gcs",),
    ),
    # ------------------------------------------------ zip input
    Mutation(
        "zip entry-count limit removed",
        "components/archive.py",
        "if len(infos) > limits.entries:",
        "if False:",
        (f"{ARCHIVE}::test_each_archive_limit_refuses_an_archive_past_it",),
    ),
    Mutation(
        "zip total-size limit removed",
        "components/archive.py",
        "if total > limits.total_bytes:",
        "if False:",
        (f"{ARCHIVE}::test_each_archive_limit_refuses_an_archive_past_it",),
    ),
    Mutation(
        "zip ratio (bomb) limit removed",
        "components/archive.py",
        "info.file_size > limits.ratio * max(info.compress_size, 1)",
        "False",
        (f"{ARCHIVE}::test_each_archive_limit_refuses_an_archive_past_it",),
    ),
    Mutation(
        "zip entries with '..' unpacked",
        "components/archive.py",
        '            or ".." in parts\n',
        "",
        (f"{ARCHIVE}::test_unsafe_archives_are_refused_before_anything_is_written",),
    ),
    Mutation(
        "zip symbolic links unpacked",
        "components/archive.py",
        "if stat.S_ISLNK(info.external_attr >> 16):",
        "if False:",
        (f"{ARCHIVE}::test_unsafe_archives_are_refused_before_anything_is_written",),
    ),
    # ------------------------------------------------ secrets
    Mutation(
        "every step logs its environment (secrets included)",
        "components/step.py",
        "    _last_lap[0] = started\n    gc.disable()",
        "    _last_lap[0] = started\n    print(dict(__import__('os').environ))\n    gc.disable()",
        (f"{BAD}::test_a_run_on_odd_files_trains_exports_predicts_and_reruns_from_the_cache",),
    ),
    # ------------------------------------------------ bad input before any step
    Mutation(
        "run starts the pipeline without checking the data first",
        "components/preflight.py",
        "    classes = split.scan(\n",
        "    classes = {} and split.scan(\n",
        (f"{BAD}::test_the_cli_refuses_bad_files_in_one_line",),
    ),
    Mutation(
        "a model with other classes replaces production without allow_class_change",
        "components/evaluate.py",
        "        if not allow_class_change:\n",
        "        if False:\n",
        (f"{EVALUATE}::test_a_model_with_other_classes_does_not_replace_production_by_default",),
    ),
    # ------------------------------------------------ registry state before any step
    Mutation(
        "an empty LATEST is taken for no production model",
        "components/registry.py",
        '    elif not version:\n        problem = "is empty"\n',
        "    elif not version:\n        return None\n",
        (
            "tests/test_registry.py::test_a_jammed_registry_stops_run_models_and_predict_in_one_line",
        ),
    ),
    Mutation(
        "LATEST naming an unpublished version let through before the run",
        "components/registry.py",
        "    if current is not None and current not in published:",
        "    if False:",
        (
            "tests/test_registry.py::test_a_jammed_registry_stops_run_models_and_predict_in_one_line",
        ),
    ),
    Mutation(
        "promote accepts a version that is not published",
        "components/registry.py",
        "    if metadata(registry, model_name, version) is None:\n        raise InputError(",
        "    if False:\n        raise InputError(",
        ("tests/test_registry.py::test_promote_rolls_back_and_refuses_what_is_not_published",),
    ),
    # ------------------------------------------------ what an image is, names, archives
    Mutation(
        "a TIFF (or any format Pillow reads) accepted although the model cannot decode it",
        "components/dataset.py",
        "if kind not in DECODABLE or",
        "if False and",
        (f"{BAD}::test_bad_files_stop_the_run_before_training_naming_them",),
    ),
    Mutation(
        "images over max_image_pixels accepted",
        "components/dataset.py",
        "if width * height > max_pixels:",
        "if False:",
        (f"{BAD}::test_bad_files_stop_the_run_before_training_naming_them",),
    ),
    Mutation(
        "names with control characters or bytes that are not UTF-8 accepted",
        "components/split.py",
        "if not entry.name.isprintable():",
        "if False:",
        (f"{BAD}::test_names_that_could_break_a_step_or_a_log_line_are_refused",),
    ),
    Mutation(
        "links leading out of the data folder followed",
        "components/split.py",
        "if entry.is_symlink() and not entry.resolve().is_relative_to(root.resolve()):",
        "if False:",
        (f"{BAD}::test_names_that_could_break_a_step_or_a_log_line_are_refused",),
    ),
    Mutation(
        "zip ratio checked per entry only, not for the archive as a whole",
        "components/archive.py",
        "if total > limits.ratio * max(packed, 1) and total > limits.ratio_from_bytes:",
        "if False:",
        (f"{ARCHIVE}::test_the_ratio_limit_also_holds_for_the_archive_as_a_whole",),
    ),
    Mutation(
        "encrypted zip entries let through to a traceback",
        "components/archive.py",
        "    if info.flag_bits & 0x1:",
        "    if False:",
        (f"{ARCHIVE}::test_archives_that_cannot_be_unpacked_are_one_line",),
    ),
    Mutation(
        "published versions keep the exporting process's umask",
        "components/storage.py",
        "        _readable_by_all(staging)\n",
        "",
        (f"{EXPORT}::test_published_versions_are_readable_by_other_users",),
    ),
    Mutation(
        "staging left by a killed export is never removed",
        "components/export.py",
        "    for left in storage.remove_stale_staging(registry_path(registry, model_name)):",
        "    for left in []:",
        (f"{EXPORT_FAULTS}::test_staging_left_by_a_killed_export_is_removed_once_an_hour_old",),
    ),
    # ------------------------------------------------ the sharded data path (issue 15)
    Mutation(
        "each replica divides its loss by its own share of the batch, not the global batch",
        "components/fit.py",
        "loss = tf.reduce_sum(losses) / global_size",
        "loss = tf.reduce_sum(losses) / size",
        ("tests/test_shards.py::test_two_devices_train_as_one",),
    ),
    Mutation(
        "augmentation seeded per extract group, not per shard",
        "components/extract.py",
        "augment_fn = nets.augmenter(seed + position, augmentation)",
        "augment_fn = nets.augmenter(seed + group, augmentation)",
        ("tests/test_shards.py::test_one_or_two_extract_workers_give_the_same_features_and_head",),
    ),
    Mutation(
        "every extract task reads every shard, not only its group's",
        "components/extract.py",
        "mine = shards.of_group(index, group, groups)",
        'mine = index["shards"]',
        ("tests/test_shards.py::test_one_or_two_extract_workers_give_the_same_features_and_head",),
    ),
    Mutation(
        "training accepts feature artifacts that miss a group's shards",
        "components/shards.py",
        "    if got != expected:\n",
        "    if False:\n",
        ("tests/test_shards.py::test_training_refuses_features_that_miss_a_group",),
    ),
    Mutation(
        "evaluation skips the serving_default check of its sample",
        "components/evaluate.py",
        "if served_row.argmax() != expected.argmax() or difference > TOLERANCE:",
        "if False:",
        (f"{EVALUATE}::test_serving_that_differs_from_the_features_path_is_refused",),
    ),
    Mutation(
        "evaluation trusts the feature shards' rows without checking their labels",
        "components/evaluate.py",
        'if None in where or (batch["label"] != y_true[where]).any():',
        "if None in where:",
        (f"{EVALUATE}::test_a_manifest_whose_labels_differ_from_the_shards_is_refused",),
    ),
    Mutation(
        "extract on several devices puts the rows of a batch back in another order",
        "components/extract.py",
        "parts = np.array_split(np.asarray(x), n)",
        "parts = np.array_split(np.asarray(x)[::-1], n)",
        ("tests/test_shards.py::test_extract_on_two_devices_gives_one_devices_features",),
    ),
    Mutation(
        "a fine-tuned model evaluated through the frozen backbone's stale features",
        "components/evaluate.py",
        '    fine_tuned = training.get("fine_tune_kept")\n',
        "    fine_tuned = False\n",
        (f"{TRAIN}::test_fine_tuning_that_improves_validation_is_kept",),
    ),
    # ------------------------------------------------ records without TensorFlow
    Mutation(
        "TFRecord checksums masked with another constant (TensorFlow would refuse the shards)",
        "components/tfrecord.py",
        "+ 0xA282EAD8) & 0xFFFFFFFF",
        "+ 0xA282EAD9) & 0xFFFFFFFF",
        ("tests/test_tfrecord.py::test_records_are_byte_for_byte_tensorflows",),
    ),
    Mutation(
        "split loads TensorFlow again",
        "components/split.py",
        "from components.facts import SplitFacts\n",
        "from components.facts import SplitFacts\nimport tensorflow  # noqa\n",
        ("tests/test_tfrecord.py::test_split_does_not_import_tensorflow",),
    ),
    Mutation(
        "a step's phases carry over from the step before",
        "components/step.py",
        "    _laps.clear()\n",
        "",
        ("tests/test_step.py::test_each_step_starts_its_laps_afresh",),
    ),
    # ------------------------------------------------ start-up costs
    Mutation(
        "what the imports loaded is left to the collector (and to the exit's sweep)",
        "components/step.py",
        '    if phase == "import":\n        _freeze_heap()\n',
        "",
        (
            "tests/test_step.py::test_imports_run_without_the_collector_and_what_they_loaded_is_frozen",
        ),
    ),
    Mutation(
        "a local run starts two extract tasks on one machine",
        "components/cli.py",
        '"weights": "auto", "extract_workers": 1}',
        '"weights": "auto"}',
        ("tests/test_cli.py::test_config_file_with_flags_over_it_and_dry_run",),
    ),
    Mutation(
        "the command line loads matplotlib with the report module",
        "components/report.py",
        "import numpy as np\nfrom PIL import Image\n",
        "import numpy as np\nfrom matplotlib import pyplot  # noqa\nfrom PIL import Image\n",
        ("tests/test_cli.py::test_no_mistake_needs_tensorflow_or_matplotlib_to_be_refused",),
    ),
    Mutation(
        "grappler left on on a CPU",
        "components/backbone.py",
        "    if not gpu:\n        tf.config.optimizer",
        "    if False:\n        tf.config.optimizer",
        ("tests/test_backbone.py::test_on_a_cpu_auto_precision_is_float32_and_grappler_is_off",),
    ),
    Mutation(
        "the train step loads Keras' extras (scikit-learn, SciPy, pandas, matplotlib)",
        "components/kfp_components.py",
        '    without_keras_extras()\n    with step("train"',
        '    with step("train"',
        ("tests/test_step.py::test_extract_and_train_run_without_keras_extras",),
    ),
    Mutation(
        "Keras' extras blocked only where they were loaded already",
        "components/step.py",
        "        sys.modules.setdefault(name, None)",
        "        name in sys.modules and sys.modules.setdefault(name, None)",
        ("tests/test_step.py::test_extract_and_train_run_without_keras_extras",),
    ),
    Mutation(
        "a local run with one extract worker runs extract and train as two tasks",
        "components/local_run.py",
        "        pipeline = make_pipeline(one_task=one_task)\n",
        "        pipeline = make_pipeline(one_task=False)\n",
        (f"{BAD}::test_a_run_on_odd_files_trains_exports_predicts_and_reruns_from_the_cache",),
    ),
    Mutation(
        "the model saved from extract's functions in memory keeps the untrained head",
        "components/serving.py",
        "        template.head.set_weights(head_weights)\n",
        "",
        (f"{TRAIN}::test_extract_and_train_in_one_process_save_the_model_the_files_way_saves",),
    ),
    Mutation(
        "fused Adam's bias correction counts one step ahead of Keras' Adam",
        "components/fit.py",
        '        step = tf.cast(self.iterations + 1, "float32")\n',
        '        step = tf.cast(self.iterations + 2, "float32")\n',
        ("tests/test_fit.py::test_fused_adam_is_keras_adam",),
    ),
    # ------------------------------------------------ backbone cache
    Mutation(
        "the backbone cache is keyed by the weights file's path, not its content",
        "components/backbone_cache.py",
        '        init = {"sha256": sha256_of(weights)}\n',
        '        init = {"path": weights}\n',
        (f"{CACHE}::test_the_key_follows_what_the_extractor_computes",),
    ),
    Mutation(
        "a gs:// weights file is keyed by its name, not its checksum",
        "components/backbone_cache.py",
        '            init = {"gcs_checksum": storage.checksum(weights)}\n',
        '            init = {"gcs": weights}\n',
        (f"{CACHE}::test_a_gcs_weights_file_is_keyed_by_its_checksum",),
    ),
    Mutation(
        "the backbone cache key leaves out the precision",
        "components/backbone_cache.py",
        '        "precision": keras.mixed_precision.global_policy().name,\n',
        "",
        (f"{CACHE}::test_the_key_follows_what_the_extractor_computes",),
    ),
    Mutation(
        "extract builds the backbone even when the cache has it",
        "components/extract.py",
        "    if hit:\n",
        "    if False:\n",
        (f"{CACHE}::test_a_cached_backbone_gives_the_features_and_model_a_built_one_gives",),
    ),
    Mutation(
        "the run's caching line leaves out that the backbone came from the cache",
        "components/train.py",
        '    loaded = index.get("backbone_cache") == "loaded"\n',
        "    loaded = False\n",
        (f"{CACHE}::test_a_cached_backbone_gives_the_features_and_model_a_built_one_gives",),
    ),
    Mutation(
        "a second store of the same key replaces the entry",
        "components/backbone_cache.py",
        "                storage.publish_tree(tmp, where, ENTRY)\n",
        "                if tf.io.gfile.exists(where):\n"
        "                    tf.io.gfile.rmtree(where)\n"
        "                storage.publish_tree(tmp, where, ENTRY)\n",
        (f"{CACHE}::test_an_entry_is_never_replaced",),
    ),
    Mutation(
        "a cache that cannot be written fails the run",
        "components/backbone_cache.py",
        "    except UNWRITABLE as e:\n",
        "    except storage.StorageConflict as e:\n",
        (f"{CACHE}::test_a_cache_that_cannot_be_written_is_named_and_the_run_goes_on",),
    ),
    Mutation(
        "an entry downloaded from GCS is left in the temporary folder",
        "components/backbone_cache.py",
        '        with tempfile.TemporaryDirectory(prefix="backbone-cache-") as local:\n'
        "            storage.download_tree(where, local)\n",
        '        if local := tempfile.mkdtemp(prefix="backbone-cache-"):\n'
        "            storage.download_tree(where, local)\n",
        (f"{CACHE}::test_a_gcs_cache_is_stored_and_loaded_leaving_no_download_behind",),
    ),
    Mutation(
        "a damaged cache entry fails the run",
        "components/backbone_cache.py",
        "    except UNREADABLE as e:\n",
        "    except KeyError as e:\n",
        (f"{CACHE}::test_a_damaged_entry_is_named_and_built_around",),
    ),
]
