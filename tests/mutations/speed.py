"""Mutations of the start-up savings and the backbone cache: each saving must keep its
results, and a cache must never change or block a run."""

from mutations.base import CACHE, Mutation

SPEED = [
    # ------------------------------------------------ start-up costs
    Mutation(
        "a local run starts two extract tasks on one machine",
        "shapes_pipeline/runners/cli.py",
        '"weights": "auto", "extract_workers": 1,',
        '"weights": "auto",',
        ("tests/test_cli.py::test_config_file_with_flags_over_it_and_dry_run",),
    ),
    Mutation(
        "the command line loads matplotlib with the report module",
        "shapes_pipeline/helpers/report.py",
        "import numpy as np\nfrom PIL import Image\n",
        "import numpy as np\nfrom matplotlib import pyplot  # noqa\nfrom PIL import Image\n",
        ("tests/test_cli.py::test_no_mistake_needs_tensorflow_or_matplotlib_to_be_refused",),
    ),
    # ------------------------------------------------ backbone cache
    Mutation(
        "the backbone cache is keyed by the weights file's path, not its content",
        "shapes_pipeline/helpers/backbone_cache.py",
        '        init = {"sha256": sha256_of(weights)}\n',
        '        init = {"path": weights}\n',
        (f"{CACHE}::test_the_key_follows_what_the_extractor_computes",),
    ),
    Mutation(
        "a gs:// weights file is keyed by its name, not its checksum",
        "shapes_pipeline/helpers/backbone_cache.py",
        '            init = {"gcs_checksum": storage.checksum(weights)}\n',
        '            init = {"gcs": weights}\n',
        (f"{CACHE}::test_a_gcs_weights_file_is_keyed_by_its_checksum",),
    ),
    Mutation(
        "the backbone cache key leaves out the precision",
        "shapes_pipeline/helpers/backbone_cache.py",
        '        "precision": keras.mixed_precision.global_policy().name,\n',
        "",
        (f"{CACHE}::test_the_key_follows_what_the_extractor_computes",),
    ),
    Mutation(
        "extract builds the backbone even when the cache has it",
        "shapes_pipeline/steps/extract.py",
        "    if hit:\n",
        "    if False:\n",
        (f"{CACHE}::test_a_cached_backbone_gives_the_features_and_model_a_built_one_gives",),
    ),
    Mutation(
        "the run's caching line leaves out that the backbone came from the cache",
        "shapes_pipeline/steps/train.py",
        '    loaded = index.get("backbone_cache") == "loaded"\n',
        "    loaded = False\n",
        (f"{CACHE}::test_a_cached_backbone_gives_the_features_and_model_a_built_one_gives",),
    ),
    Mutation(
        "a second store of the same key replaces the entry",
        "shapes_pipeline/helpers/backbone_cache.py",
        "                storage.publish_tree(tmp, where, ENTRY)\n",
        "                if tf.io.gfile.exists(where):\n"
        "                    tf.io.gfile.rmtree(where)\n"
        "                storage.publish_tree(tmp, where, ENTRY)\n",
        (f"{CACHE}::test_an_entry_is_never_replaced",),
    ),
    Mutation(
        "a cache that cannot be written fails the run",
        "shapes_pipeline/helpers/backbone_cache.py",
        "    except UNWRITABLE as e:\n",
        "    except storage.StorageConflict as e:\n",
        (f"{CACHE}::test_a_cache_that_cannot_be_written_is_named_and_the_run_goes_on",),
    ),
    Mutation(
        "an entry downloaded from GCS is left in the temporary folder",
        "shapes_pipeline/helpers/backbone_cache.py",
        '        with tempfile.TemporaryDirectory(prefix="backbone-cache-") as local:\n'
        "            storage.download_tree(where, local)\n",
        '        if local := tempfile.mkdtemp(prefix="backbone-cache-"):\n'
        "            storage.download_tree(where, local)\n",
        (f"{CACHE}::test_a_gcs_cache_is_stored_and_loaded_leaving_no_download_behind",),
    ),
    Mutation(
        "a damaged cache entry fails the run",
        "shapes_pipeline/helpers/backbone_cache.py",
        "    except UNREADABLE as e:\n",
        "    except KeyError as e:\n",
        (f"{CACHE}::test_a_damaged_entry_is_named_and_built_around",),
    ),
]
