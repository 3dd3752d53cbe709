"""Backbone throughput on an accelerator, for the scaling projection (docs/scaling.md).

Runs ``keras.applications`` backbones (no top, random weights: speed does not depend on
them) under Keras 3's JAX backend, so it needs only ``keras`` and ``jax``: TensorFlow's
wheels are too large to bring to the GPU machines, whose images have JAX. It measures
images per second of a jitted forward pass in mixed precision (bfloat16 compute, the usual
choice on a GPU) and in float32, at several batch sizes, and the seconds of the first,
untimed call, which is mostly XLA compiling.

Time on those machines is short and a run may be cut off, so the configurations most
useful to the projection come first, the JSON file is rewritten after each one, and
``--budget-s`` stops starting new ones once that much time has passed.

    KERAS_BACKEND=jax python bench/gpu_backbone.py --budget-s 360   # the full set
    KERAS_BACKEND=jax python bench/gpu_backbone.py --quick          # a smoke test on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

POLICIES = ["mixed_bfloat16", "float32"]
BATCHES = [256, 128, 64]
# (backbone, image size) groups, most useful to the projection first.
FULL = [
    ("InceptionResNetV2", 128),
    ("MobileNet", 128),
    ("InceptionResNetV2", 299),
    ("MobileNet", 299),
]
QUICK = [("MobileNet", 64)]


def build(name: str, size: int, policy: str):
    """A jitted stateless forward pass of the backbone and its variables."""
    keras.mixed_precision.set_global_policy(policy)
    backbone = getattr(keras.applications, name)(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling="max"
    )
    keras.mixed_precision.set_global_policy("float32")
    state = (
        [v.value for v in backbone.trainable_variables],
        [v.value for v in backbone.non_trainable_variables],
    )

    @jax.jit
    def forward(trainable, non_trainable, images):
        features, _ = backbone.stateless_call(trainable, non_trainable, images, training=False)
        return features

    return forward, state, backbone.compute_dtype


def measure(forward, state, dtype, size: int, batch: int, repeats: int) -> dict:
    """Seconds of the first (compiling) call, and the median of ``repeats`` timed batches."""
    images = jax.device_put(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)))
    images = images.astype(dtype)
    started = time.perf_counter()
    forward(*state, images).block_until_ready()
    compile_s = time.perf_counter() - started
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        forward(*state, images).block_until_ready()
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    return {
        "median_batch_s": round(median, 5),
        "images_per_s": round(batch / median, 1),
        "compile_s": round(compile_s, 2),
    }


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="a small smoke test (CPU)")
    cli.add_argument("--budget-s", type=float, default=None, help="start nothing after this")
    cli.add_argument(
        "--output", default=str(Path(__file__).with_name("results-gpu.json")), help="JSON file"
    )
    args = cli.parse_args()
    groups, batches, repeats = (QUICK, [8], 2) if args.quick else (FULL, BATCHES, 10)
    planned = [(g, p, b) for g in groups for p in POLICIES for b in batches]
    start = time.perf_counter()
    device = jax.devices()[0]
    results = {
        "label": "Keras on JAX (not TensorFlow): keras.applications, random weights, jitted "
        "stateless forward pass with max pooling, median of timed batches after compiling",
        "device": getattr(device, "device_kind", str(device)),
        "platform": device.platform,
        "jax": jax.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "budget_s": args.budget_s,
        "planned": len(planned),
        "complete": False,
        "runs": [],
    }
    output = Path(args.output)
    built = None
    for (name, size), policy, batch in planned:
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            print(f"budget of {args.budget_s} s spent: stopping", flush=True)
            break
        if built is None or built[0] != (name, size, policy):
            built = ((name, size, policy), *build(name, size, policy))
        run = {"backbone": name, "image_size": size, "batch_size": batch, "precision": policy}
        run.update(measure(*built[1:], size, batch, repeats))
        run["elapsed_s"] = round(time.perf_counter() - start, 1)
        results["runs"].append(run)
        results["complete"] = len(results["runs"]) == len(planned)
        output.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(run), flush=True)
    print(f"written to {output}")


if __name__ == "__main__":
    main()
