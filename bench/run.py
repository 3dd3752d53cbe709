"""`make bench`: the notebook's way against this project's, measured side by side in one run.

Writes bench/results.json and prints a table. Speed does not depend on the weights, so the
backbone is randomly initialised (``weights=none``); the data are 300 demo images.

Training is compared like for like: the notebook's 500 epochs (its time per epoch, set-up
excluded) against this project's training: the extract step (the frozen backbone over every
image, once) plus ``train()`` up to the trained model (backbone built, features read, head
trained). The two steps in all, with process starts, imports and writing the SavedModel,
are shown too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


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
    from components import model

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


def notebook_epoch_seconds(extractor, head, data, epochs: int) -> list[float]:
    """The notebook's way: Keras ``fit`` on images, the frozen backbone inside every step,
    trained on its 80% (train + val here) and validated on its 20% (test), batch 32."""
    import keras
    import numpy as np

    from components import model

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
    whole.fit(
        x,
        y,
        batch_size=32,
        validation_data=validation,
        epochs=epochs + 1,
        callbacks=[Clock()],
        verbose=0,
    )
    return seconds[1:]  # the first epoch also traces the graph


def measure_in_process(dataset_dir: Path, backbone: str, image_size: int) -> dict:
    import keras
    import numpy as np

    from components import dataset, model, shards

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
    epochs = notebook_epoch_seconds(
        extractor, model.head(extractor.output_shape[-1], len(classes)), data, epochs=3
    )
    return {
        "matmul_gflops": round(gflops_peak, 1),
        "feature_extraction": {
            "gflop_per_image": round(gflop, 3),
            "images_per_s": round(images_per_s, 1),
            "gflops": round(images_per_s * gflop, 1),
            "fraction_of_matmul": round(images_per_s * gflop / gflops_peak, 3),
        },
        "notebook": {
            "epoch_seconds": [round(s, 2) for s in epochs],
            "median_epoch_seconds": round(statistics.median(epochs), 2),
            "images_per_epoch": (len(data["train"][1]) + len(data["val"][1])) // 32 * 32,
            "validation_images_per_epoch": 32,
            "extrapolated_500_epochs_s": round(500 * statistics.median(epochs), 1),
        },
    }


def pipeline_run(tmp: Path, data: Path, backbone: str, image_size: int) -> dict:
    """A whole ``shapes-pipeline run`` as a user starts it, in its own process."""
    tmp.mkdir()
    summary = tmp / "summary.json"
    command = [
        sys.executable,
        "-m",
        "components.cli",
        "run",
        "--data",
        str(data),
        "--backbone",
        backbone,
        "--weights",
        "none",
        "--image-size",
        str(image_size),
        "--min-accuracy",
        "0",
        "--registry",
        str(tmp / "registry"),
        "--pipeline-root",
        str(tmp / "runs"),
        "--summary",
        str(summary),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    wall = time.perf_counter() - started
    result = json.loads(summary.read_text())
    trained = result["training"]
    return {
        "wall_s": round(wall, 1),
        "timings_s": result["timings_s"],
        "peak_memory_mb": result["peak_memory_mb"],
        "epochs_run": result["epochs_run"],
        "train_step_s": {
            name: trained[f"{name}_seconds"]
            for name in ("build", "feature", "head", "training", "save")
        },
    }


def median_run(runs: list[dict]) -> dict:
    """Each figure's median over the runs (figure by figure, so not one particular run)."""
    first = runs[0]
    if isinstance(first, dict):
        return {key: median_run([run[key] for run in runs]) for key in first}
    if first is None:
        return None
    return round(statistics.median(runs), 2)


def table(results: dict) -> str:
    nb, fe, run = results["notebook"], results["feature_extraction"], results["run"]
    phases = run["train_step_s"]
    rows = [
        ("notebook's way, seconds per epoch (median)", f"{nb['median_epoch_seconds']:.2f}"),
        ("notebook's way, 500 epochs (extrapolated), s", f"{nb['extrapolated_500_epochs_s']:.0f}"),
        (f"pipeline runs (figures below: medians of {len(results['runs'])})", ""),
        (
            f"this project's training (epoch cap 500, stopped at {run['epochs_run']:.0f}): "
            "extract step + train(), s",
            f"{run['timings_s']['extract'] + phases['training']:.1f}",
        ),
        (
            "  in train(): backbone built / features read / head trained, s",
            f"{phases['build']:.1f} / {phases['feature']:.1f} / {phases['head']:.1f}",
        ),
        ("speed-up of training", f"{results['training_speedup']:.0f}x"),
        (
            "extract + train steps in all (process starts, imports, SavedModel written), s",
            f"{run['timings_s']['extract'] + run['timings_s']['train']:.1f} "
            f"({results['train_step_speedup']:.0f}x)",
        ),
        ("whole `shapes-pipeline run` wall time, s", f"{run['wall_s']:.1f}"),
        *(
            (
                f"  step {name}, s / peak MB",
                f"{run['timings_s'][name]:.1f} / {run['peak_memory_mb'][name]}",
            )
            for name in ("split", "plan", "extract", "train", "evaluate", "export")
        ),
        ("largest peak memory of any step in any run, MB", f"{results['max_peak_memory_mb']}"),
        ("feature extraction, images/s", f"{fe['images_per_s']:.1f}"),
        (
            "feature extraction, GFLOP/s (of matmul's)",
            f"{fe['gflops']:.0f} ({fe['fraction_of_matmul']:.0%})",
        ),
        ("float32 matmul, GFLOP/s", f"{results['matmul_gflops']:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__)
    cli.add_argument("--backbone", default="InceptionResNetV2")
    cli.add_argument("--image-size", type=int, default=128)
    cli.add_argument("--per-class", type=int, default=100)
    cli.add_argument("--runs", type=int, default=3, help="whole pipeline runs (medians shown)")
    cli.add_argument("--output", default=str(REPO / "bench" / "results.json"))
    args = cli.parse_args()

    from components.demo_data import generate
    from components.split import split_dataset

    with tempfile.TemporaryDirectory(prefix="shapes-bench-") as tmp:
        tmp = Path(tmp)
        generate(str(tmp / "data"), per_class=args.per_class, seed=0)
        split_dataset(
            str(tmp / "data"), str(tmp / "ds"), seed=230, train_fraction=0.8, val_fraction=0.1
        )
        results = {
            "backbone": args.backbone,
            "image_size": args.image_size,
            "images": 3 * args.per_class,
            **measure_in_process(tmp / "ds", args.backbone, args.image_size),
            "runs": [
                pipeline_run(tmp / f"run{i}", tmp / "data", args.backbone, args.image_size)
                for i in range(args.runs)
            ],
        }
    results["run"] = median_run(results["runs"])
    results["max_peak_memory_mb"] = max(
        mb for run in results["runs"] for mb in run["peak_memory_mb"].values() if mb is not None
    )
    notebook = results["notebook"]["extrapolated_500_epochs_s"]
    run = results["run"]
    # Training is now two steps: extract (the backbone, once) and train (the head).
    training = run["timings_s"]["extract"] + run["train_step_s"]["training"]
    results["training_speedup"] = round(notebook / training, 1)
    steps = run["timings_s"]["extract"] + run["timings_s"]["train"]
    results["train_step_speedup"] = round(notebook / steps, 1)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
