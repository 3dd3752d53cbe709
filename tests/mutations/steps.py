"""Mutations of the steps' results: the registry's publishing and races, export's
verification, training, the split, evaluation and the gate."""

from mutations.base import E2E, EVALUATE, EXPORT, EXPORT_FAULTS, SPLIT, TRAIN, Mutation

STEPS = [
    # ------------------------------------------------ registry: races and publishing
    Mutation(
        "local LATEST swapped without the lock",
        "shapes_pipeline/helpers/storage.py",
        "        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes\n",
        "",
        (f"{EXPORT_FAULTS}::test_two_gates_racing_for_production[local]",),
        repeat=5,
    ),
    Mutation(
        "GCS LATEST written without its generation precondition",
        "shapes_pipeline/helpers/storage.py",
        "bucket.blob(name).upload_from_string(text, if_generation_match=generation)",
        "bucket.blob(name).upload_from_string(text)",
        (f"{EXPORT_FAULTS}::test_two_gates_racing_for_production[gcs]",),
        repeat=5,
    ),
    Mutation(
        "local version published over an existing one",
        "shapes_pipeline/helpers/storage.py",
        "os.rename(staging, target)  # fails where",
        "shutil.copytree(staging, target, dirs_exist_ok=True)  # fails where",
        (f"{EXPORT_FAULTS}::test_two_writers_racing_for_the_same_version_name[local]",),
        repeat=5,
    ),
    Mutation(
        "GCS version marker written without its generation precondition",
        "shapes_pipeline/helpers/storage.py",
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
        "shapes_pipeline/steps/verify.py",
        "path, row = test[i], served[rows[i]]",
        "path, row = test[i], served[rows[(i + 1) % len(rows)]]",
        (f"{EXPORT}::test_verify_holds_the_model_to_the_evaluation_within_1e_4",),
    ),
    Mutation(
        "verification runs in the exporting process",
        "shapes_pipeline/steps/export.py",
        "reloaded = verify_in_fresh_process(tmp, dataset_dir, predictions_path, sample)",
        "reloaded = __import__('shapes_pipeline.steps.verify').verify.verify("
        "tmp, dataset_dir, predictions_path, sample)",
        (f"{EXPORT}::test_verification_runs_on_the_files_in_a_fresh_process",),
    ),
    Mutation(
        "the content hash taken of the original folder, not of the copy to publish",
        "shapes_pipeline/steps/export.py",
        "content = artifact.tree_sha256(tmp)",
        "content = artifact.served_files_sha256(model_dir)",
        (f"{EXPORT}::test_verification_checks_the_staged_copy_not_the_original",),
    ),
    # ------------------------------------------------ training
    Mutation(
        "training labels shuffled against their images",
        "shapes_pipeline/helpers/shards.py",
        'return joined["features"][order], joined["label"][order], joined["row"][order]',
        'return joined["features"][order], np.random.default_rng(0).permutation('
        'joined["label"][order]), joined["row"][order]',
        (f"{E2E}::test_training_learns_the_shapes",),
    ),
    Mutation(
        "early stopping on the test split instead of val",
        "shapes_pipeline/steps/train.py",
        "found[split] = shards.feature_shards(feature_dirs, split, dataset_dir)",
        "found[split] = shards.feature_shards(feature_dirs, "
        "{'val': 'test'}.get(split, split), dataset_dir)",
        (f"{TRAIN}::test_training_never_reads_the_test_split",),
    ),
    Mutation(
        "fine-tuned weights always kept, even when validation got worse",
        "shapes_pipeline/steps/train.py",
        'kept = not validated or min(stage["val_loss"]) < min(history["val_loss"])',
        "kept = True",
        (f"{TRAIN}::test_fine_tuning_that_worsens_validation_gives_back_the_head_only_model",),
    ),
    Mutation(
        "fine-tuned weights never kept, even when validation got better",
        "shapes_pipeline/steps/train.py",
        'kept = not validated or min(stage["val_loss"]) < min(history["val_loss"])',
        "kept = False",
        (f"{TRAIN}::test_fine_tuning_that_improves_validation_is_kept",),
    ),
    Mutation(
        "train's model keeps the untrained head of extract's serving model",
        "shapes_pipeline/helpers/serving.py",
        "        variable.assign(weight.astype(variable.dtype.as_numpy_dtype))\n",
        "        pass\n",
        ("tests/test_serving_model.py",),
    ),
    Mutation(
        "the packed backbone serves in training mode (batch norm on the batch's statistics)",
        "shapes_pipeline/helpers/model.py",
        "network.stateless_call(values[:trainable], values[trainable:], x, training=False)",
        "network.stateless_call(values[:trainable], values[trainable:], x, training=True)",
        ("tests/test_serving_model.py",),
    ),
    Mutation(
        "train builds the backbone again when it only trains the head",
        "shapes_pipeline/steps/train.py",
        "if fine_tuning.fine_tune_layers:  # fine-tuning changes the backbone",
        "if True:  # fine-tuning changes the backbone",
        (f"{TRAIN}::test_training_only_the_head_builds_no_backbone",),
    ),
    Mutation(
        "decoder returns all-zero pixels for grey, grey+alpha, RGBA and 16-bit images",
        "shapes_pipeline/helpers/images.py",
        "    pixels = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)\n",
        "    pixels = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)\n"
        "    native = tf.shape(tf.io.decode_image(image_bytes, expand_animations=False))[-1]\n"
        "    pixels = pixels * tf.cast(native == 3, pixels.dtype)\n",
        ("tests/test_decode.py",),
    ),
    # ------------------------------------------------ split
    Mutation(
        "split ignores its seed and always uses 230",
        "shapes_pipeline/steps/split.py",
        "train, test = notebook_split(files, seed, train_fraction)",
        "train, test = notebook_split(files, 230, train_fraction)",
        (f"{SPLIT}::test_split_step_writes_the_pinned_split",),
    ),
    Mutation(
        "split rule: files not sorted before the shuffle",
        "shapes_pipeline/steps/split.py",
        "ordered = sorted(files)",
        "ordered = list(files)",
        (f"{SPLIT}::test_split_of_a_known_file_list_is_pinned",),
    ),
    Mutation(
        "split rule: the cut rounded instead of truncated",
        "shapes_pipeline/steps/split.py",
        "cut = int(train_fraction * len(ordered))",
        "cut = round(train_fraction * len(ordered))",
        (f"{SPLIT}::test_split_of_a_known_file_list_is_pinned",),
    ),
    Mutation(
        "leak check: the same image in training and test data let through",
        "shapes_pipeline/steps/split.py",
        'if "test" in {split_of[k] for k in group} and len({split_of[k] for k in group}) > 1:',
        "if False:",
        (f"{SPLIT}::test_leaks_are_errors_naming_the_files",),
    ),
    Mutation(
        "leak check: the same image in two classes let through",
        "shapes_pipeline/steps/split.py",
        "if len({label for label, _ in group}) > 1:",
        "if False:",
        (f"{SPLIT}::test_leaks_are_errors_naming_the_files",),
    ),
    Mutation(
        "images not decoded before the split (a truncated file gets through)",
        "shapes_pipeline/helpers/dataset.py",
        "            image.load()\n",
        "            pass\n",
        (f"{SPLIT}::test_bad_input_names_the_path_and_writes_nothing",),
    ),
    # ------------------------------------------------ evaluation and gate
    Mutation(
        "evaluate swaps the probabilities of two images of one class",
        "shapes_pipeline/steps/evaluate.py",
        "    y_pred = probabilities.argmax(axis=1)\n",
        "    probabilities[[0, 1]] = probabilities[[1, 0]]\n"
        "    y_pred = probabilities.argmax(axis=1)\n",
        (f"{EVALUATE}::test_each_prediction_is_its_own_images_score",),
    ),
    Mutation(
        "the model scores images in sorted order, not in the order it was given",
        "shapes_pipeline/helpers/serving.py",
        "encoded = [x if isinstance(x, bytes) else Path(x).read_bytes() for x in items]",
        "encoded = [x if isinstance(x, bytes) else Path(x).read_bytes() for x in sorted(items)]",
        (f"{EVALUATE}::test_each_prediction_is_its_own_images_score",),
    ),
    Mutation(
        "the production model scored on the test images in another order than their labels",
        "shapes_pipeline/steps/evaluate.py",
        'theirs = np.array([scored["probabilities"][rows[i]].argmax() for i in compared])',
        'theirs = np.array([scored["probabilities"][rows[i]].argmax() for i in compared[::-1]])',
        (f"{EVALUATE}::test_champion_is_scored_on_this_runs_test_images",),
    ),
    Mutation(
        "the gate ignores the production model's accuracy",
        "shapes_pipeline/steps/evaluate.py",
        'if champion["accuracy"] - mine > max_regression + 1e-12:',
        "if False:",
        (f"{EVALUATE}::test_gate_decision",),
    ),
    Mutation(
        "the evaluation's self-check of accuracy against the confusion matrix skipped",
        "shapes_pipeline/steps/evaluate.py",
        'if not math.isclose(evaluation["test_accuracy"], np.trace(matrix) / matrix.sum()):',
        "if False:",
        (f"{EVALUATE}::test_inconsistent_evaluation_is_an_error",),
    ),
    Mutation(
        "export publishes although the gate failed",
        "shapes_pipeline/steps/export.py",
        '    if not gate["passed"]:\n',
        "    if False:\n",
        (f"{EXPORT}::test_export_refuses_a_failed_gate_and_a_moved_production",),
    ),
    Mutation(
        "predict prints each image with another image's probabilities",
        "shapes_pipeline/runners/cli_models.py",
        "for path, row in zip(images, probabilities, strict=True)",
        "for path, row in zip(images, probabilities[::-1], strict=True)",
        (f"{E2E}::test_run_from_gcs_to_gcs",),
    ),
]
