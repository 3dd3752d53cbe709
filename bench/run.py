"""`make bench`: the notebook's way against this project's, measured side by side in one run.

Writes bench/results.json and prints a table. Speed does not depend on the weights, so the
backbone is randomly initialised (``weights=none``); the data are 300 demo images. With
``--weights-file`` every run loads that same random backbone from a file, as production
runs load ImageNet weights, so the ratios include the load.

The notebook's way is measured in this process: its seconds per epoch (set-up excluded;
the median of epochs timed before the runs and after each round of them), times its 500
epochs. This project's is whole ``shapes-pipeline run``s, each in its own
process, of this code and of each ``--before`` revision (a git worktree), interleaved run by
run so each sees the same machine. Compared: the whole run in notebook epochs, and the
steps that train (extract and train, process start to the written SavedModel) against the
notebook's 500 epochs. This code also runs with a backbone cache (``--backbone-cache``)
that one run before the rounds filled, as scheduled retraining would find it
(``--no-cache`` skips those). Each step's seconds are split into importing, building, tracing,
saving and the rest (its ``phase_seconds``), with its peak memory. Then the digits
accuracies (``bench/digits.py``) with and without fine-tuning and augmentation.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.table import STEPS, table  # noqa: E402
from bench.worktree import cli_module  # noqa: E402


def matmul_gflops(sizes: tuple[int, ...] = (2048, 4096), seconds: float = 2.0) -> float:
    """float32 matmul throughput, the best round of a few sizes: the practical peak for dense
    math (the best, not the median, because on a shared machine a slow round is noise)."""
    import tensorflow as tf

    multiply = tf.function(lambda m: m @ m)
    best = 0.0
    for size in sizes:
        a = tf.random.normal((size, size))
        multiply(a).numpy()
        repeats = max(1, int(seconds * 100e9 / (2 * size**3)))
        times = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(repeats):
                result = multiply(a)
            result.numpy()
            times.append(time.perf_counter() - started)
        best = max(best, repeats * 2 * size**3 / min(times) / 1e9)
    return best


def gflop_per_image(extractor) -> float:
    """Floating-point operations of one forward pass, counted by TensorFlow's profiler."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((1, *extractor.input_shape[1:]), tf.float32)
    concrete = tf.function(lambda x: extractor(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return (
        tf.compat.v1.profiler.profile(graph=graph, cmd="op", options=options).total_float_ops / 1e9
    )


def feature_throughput(extractor, images, batch_size: int) -> float:
    """Warm images per second of the backbone, as the train step runs it."""
    from shapes_pipeline.helpers import model

    size = extractor.input_shape[1]
    extract = model.batched(
        model.compiled(lambda x: extractor(x, training=False), size), batch_size
    )
    extract(images[:batch_size])  # trace and warm up
    times = []
    for _ in range(3):
        started = time.perf_counter()
        extract(images)
        times.append(time.perf_counter() - started)
    return len(images) / statistics.median(times)


def notebook_epochs(extractor, head, data) -> Callable[[int], list[float]]:
    """The notebook's way: Keras ``fit`` on images, the frozen backbone inside every step,
    trained on its 80% (train + val here) and validated on its 20% (test), batch 32.

    Returns ``epochs(n)``: the seconds of each of ``n`` more of its epochs, so the bench can
    time some between the pipeline's runs and both see the same machine. The first call
    also runs an untimed first epoch, which traces the graph.
    """
    import keras
    import numpy as np

    from shapes_pipeline.helpers import model

    # steps_per_epoch = n // 32 and validation_steps = n_test // 32, as the notebook had
    steps = (len(data["train"][1]) + len(data["val"][1])) // 32
    x = np.concatenate([data["train"][0], data["val"][0]])[: steps * 32]
    y = np.concatenate([data["train"][1], data["val"][1]])[: steps * 32]
    validation = (data["test"][0][:32], data["test"][1][:32])
    whole = model.classifier(extractor, head)
    whole.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    seconds: list[float] = []
    traced = False

    def epochs(n: int) -> list[float]:
        nonlocal traced
        seconds.clear()
        untimed = 0 if traced else 1
        whole.fit(
            x,
            y,
            batch_size=32,
            validation_data=validation,
            epochs=n + untimed,
            callbacks=[Clock()],
            verbose=0,
        )
        traced = True
        return seconds[untimed:]

    return epochs


def measure_in_process(
    dataset_dir: Path, backbone: str, image_size: int
) -> tuple[dict, Callable[[int], list[float]]]:
    """The backbone's throughput against the matmul peak, and the notebook's way, ready to
    time more of its epochs (``notebook_epochs``)."""
    import keras
    import numpy as np

    from shapes_pipeline.helpers import dataset, model, shards

    keras.utils.set_random_seed(0)
    classes = dataset.class_names(dataset.read_manifest(dataset_dir))
    data = {s: shards.load_pixels(dataset_dir, s, image_size) for s in ("train", "val", "test")}
    base = getattr(keras.applications, backbone)(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3)
    )
    base.trainable = False
    extractor = model.feature_extractor(base, backbone, image_size)
    gflop = gflop_per_image(extractor)
    all_images = np.concatenate([data[s][0] for s in ("train", "val", "test")])
    # matmul measured before and after the features, so both see the same machine
    gflops_peak = matmul_gflops()
    images_per_s = feature_throughput(extractor, all_images, 32)
    gflops_peak = max(gflops_peak, matmul_gflops())
    epochs = notebook_epochs(extractor, model.head(extractor.output_shape[-1], len(classes)), data)
    return {
        "matmul_gflops": round(gflops_peak, 1),
        "feature_extraction": {
            "gflop_per_image": round(gflop, 3),
            "images_per_s": round(images_per_s, 1),
            "gflops": round(images_per_s * gflop, 1),
            "fraction_of_matmul": round(images_per_s * gflop / gflops_peak, 3),
        },
        "notebook": {
            "images_per_epoch": (len(data["train"][1]) + len(data["val"][1])) // 32 * 32,
            "validation_images_per_epoch": 32,
        },
    }, epochs


# this code's runs with --backbone-cache, after one run stored the backbone there
WARM = "after, backbone cache warm"


def write_weights_file(path: str, backbone: str, image_size: int) -> None:
    """The random backbone a run with ``weights=none`` builds, as a weights file: runs that
    load it train the same model, but pay for loading a file, as production runs do.

    Called in a fresh process (``--weights-file``): Keras names a process's layers in the
    order it makes them, and a weights file only loads into layers of the same names.
    """
    import keras

    from shapes_pipeline.helpers import backbone as nets
    from shapes_pipeline.helpers.settings import defaults

    nets.devices()
    keras.utils.set_random_seed(defaults()["seed"])  # as extract seeds its build
    base, _, _ = nets.build_backbone(backbone, "none", image_size)
    base.save_weights(path)


def pipeline_run(
    tmp: Path,
    code: Path,
    data: Path,
    backbone: str,
    image_size: int,
    extra: tuple = (),
    weights: str = "none",
) -> dict:
    """A whole ``shapes-pipeline run`` of the code in ``code``, as a user starts it, in its
    own process, with ``extra`` options. Older code has no extract step or no per-phase
    seconds: those are None."""
    tmp.mkdir()
    summary = tmp / "summary.json"
    command = [
        sys.executable, "-m", cli_module(code), "run", "--data", str(data),
        "--backbone", backbone, "--weights", weights, "--image-size", str(image_size),
        "--min-accuracy", "0", "--registry", str(tmp / "registry"),
        "--pipeline-root", str(tmp / "runs"), "--summary", str(summary), *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=tmp, env=env)
    wall = time.perf_counter() - started
    result = json.loads(summary.read_text())
    phases = result.get("phase_seconds", {})
    return {
        "wall_s": round(wall, 1),
        "seconds": {s: result["timings_s"].get(s) for s in (*STEPS, "total")},
        "peak_memory_mb": {s: result["peak_memory_mb"].get(s) for s in STEPS},
        "phase_seconds": {s: phases.get(s) for s in STEPS},
        "epochs_run": result["epochs_run"],
        "test_accuracy": result["test_accuracy"],
    }


def median_run(runs: list):
    """Each figure's median over the runs (figure by figure, so not one particular run)."""
    first = runs[0]
    if isinstance(first, dict):
        return {key: median_run([run[key] for run in runs]) for key in first}
    if any(r is None for r in runs):
        return None
    return round(statistics.median(runs), 2)


def ratios(run: dict, epoch_s: float) -> dict:
    """The issue's two targets: the whole run in notebook epochs (at most 6), and how many
    times faster the steps that train (extract and train, process start to SavedModel)
    are than the notebook's 500 epochs (at least 150)."""
    training_steps = (run["seconds"]["extract"] or 0) + run["seconds"]["train"]
    return {
        "whole_run_in_notebook_epochs": round(run["wall_s"] / epoch_s, 2),
        "training_steps_s": round(training_steps, 2),
        "training_steps_speedup": round(500 * epoch_s / training_steps, 1),
    }


def digits_accuracies() -> dict:
    """The whole pipeline on scikit-learn's digits (``bench/digits.py``): frozen, augmented,
    fine-tuned, fine-tuned with augmentation; accuracies and what each step cost."""
    from bench import digits

    variants = {
        **digits.VARIANTS,
        "fine-tuned + augmented": digits.VARIANTS["fine-tuned"] + digits.VARIANTS["augmented"],
    }
    results = {"backbone": "MobileNet", "image_size": 128, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="shapes-bench-digits-") as tmp:
        data = Path(tmp, "digits")
        results["images"] = digits.write_digits(data)
        weights = str(digits.find_weights())
        for n, (name, extra) in enumerate(variants.items()):
            work = Path(tmp, str(n))
            work.mkdir()
            results["variants"][name] = digits.run(data, work, weights, 128, extra)
            print(name, json.dumps(results["variants"][name]), flush=True)
    return results


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__)
    cli.add_argument("--backbone", default="InceptionResNetV2")
    cli.add_argument("--image-size", type=int, default=128)
    cli.add_argument("--per-class", type=int, default=100)
    cli.add_argument("--runs", type=int, default=3, help="whole pipeline runs per code")
    cli.add_argument("--before", nargs="*", default=[], help="git revisions run side by side")
    cli.add_argument("--no-digits", action="store_true", help="skip the digits accuracies")
    cli.add_argument(
        "--no-cache", action="store_true", help="skip the runs with a warm backbone cache"
    )
    cli.add_argument(
        "--weights-file",
        action="store_true",
        help="every run loads its random backbone from a weights file, as production runs "
        "load ImageNet weights (the same model; the load's cost included)",
    )
    cli.add_argument("--output", default=str(REPO / "bench" / "results.json"))
    args = cli.parse_args()

    from bench.worktree import checkouts
    from shapes_pipeline.helpers.demo_data import generate
    from shapes_pipeline.steps.split import split_dataset

    with (
        tempfile.TemporaryDirectory(prefix="shapes-bench-") as tmp,
        checkouts(args.before, Path(tmp)) as trees,
    ):
        tmp = Path(tmp)
        generate(str(tmp / "data"), per_class=args.per_class, seed=0)
        split_dataset(
            str(tmp / "data"), str(tmp / "ds"), seed=230, train_fraction=0.8, val_fraction=0.1
        )
        weights = "none"
        if args.weights_file:
            weights = str(tmp / "backbone.weights.h5")
            writer = multiprocessing.get_context("spawn").Process(
                target=write_weights_file, args=(weights, args.backbone, args.image_size)
            )
            writer.start()
            writer.join()
            if writer.exitcode:
                sys.exit(f"writing {weights} failed")
        measured, notebook = measure_in_process(tmp / "ds", args.backbone, args.image_size)
        results = {
            "backbone": args.backbone,
            "image_size": args.image_size,
            "images": 3 * args.per_class,
            "weights": "a weights file" if args.weights_file else "none",
            **measured,
        }
        # the notebook's epochs before the runs and after each round of them: a slow spell
        # of the machine then weighs on both sides of the ratios
        rounds = [notebook(3)]
        codes = {
            **{f"before ({rev})": (tree, ()) for rev, tree in trees.items()},
            "after": (REPO, ()),
        }
        if not args.no_cache:
            # runs that find their traced backbone in a cache one first run stored
            cache = ("--backbone-cache", str(tmp / "backbone-cache"))
            codes[WARM] = (REPO, cache)
            results["storing_run"] = pipeline_run(
                tmp / "storing", REPO, tmp / "data", args.backbone, args.image_size, cache,
                weights,
            )  # fmt: skip
            print("storing run", json.dumps(results["storing_run"]), flush=True)
        runs: dict[str, list] = {name: [] for name in codes}
        for i in range(args.runs):  # interleaved, so every code sees the same machine
            for c, (name, (code, extra)) in enumerate(codes.items()):
                work = tmp / f"run{i}-code{c}"
                runs[name].append(
                    pipeline_run(
                        work, code, tmp / "data", args.backbone, args.image_size, extra, weights
                    )
                )
                print(name, json.dumps(runs[name][-1]), flush=True)
            rounds.append(notebook(2))
    epochs = [s for r in rounds for s in r]
    epoch = statistics.median(epochs)
    results["notebook"].update(
        {
            "epoch_seconds_by_round": [[round(s, 2) for s in r] for r in rounds],
            "median_epoch_seconds": round(epoch, 2),
            "extrapolated_500_epochs_s": round(500 * epoch, 1),
        }
    )
    results["codes"] = {}
    for name, measured_runs in runs.items():
        run = median_run(measured_runs)
        results["codes"][name] = {
            "run": run,
            "ratios": ratios(run, epoch),
            "runs": measured_runs,
        }
    if "storing_run" in results:
        results["storing_run"]["ratios"] = ratios(results["storing_run"], epoch)
    if not args.no_digits:
        results["digits"] = digits_accuracies()
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
