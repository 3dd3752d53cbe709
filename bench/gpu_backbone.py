"""Backbone throughput on an accelerator, for the scaling projection (docs/scaling.md).

Runs ``keras.applications`` backbones (no top, random weights: speed does not depend on
them) under Keras 3's JAX backend, so it needs only ``keras`` and ``jax``: TensorFlow's
wheels are too large to bring to the GPU machines, whose images have JAX. It measures
images per second of a jitted forward pass in float32 and in mixed precision (bfloat16
compute on a GPU, the usual choice there; float16 where asked), at several batch sizes,
and writes ``bench/results-gpu.json`` labelled with the device and the backend.

    KERAS_BACKEND=jax python bench/gpu_backbone.py            # the full set, a few minutes
    KERAS_BACKEND=jax python bench/gpu_backbone.py --quick    # a smoke test on a CPU
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

FULL = {
    "backbones": ["InceptionResNetV2", "MobileNet"],
    "sizes": [128, 299],
    "batches": [64, 128, 256],
    "policies": ["float32", "mixed_bfloat16"],
    "repeats": 10,
}
QUICK = {
    "backbones": ["MobileNet"],
    "sizes": [64],
    "batches": [8],
    "policies": ["float32", "mixed_bfloat16"],
    "repeats": 2,
}


def throughput(name: str, size: int, batch: int, policy: str, repeats: int) -> dict:
    """Images per second of a compiled forward pass: the median of ``repeats`` timed
    batches, after one untimed call that compiles."""
    keras.mixed_precision.set_global_policy(policy)
    backbone = getattr(keras.applications, name)(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling="max"
    )
    state = (
        [v.value for v in backbone.trainable_variables],
        [v.value for v in backbone.non_trainable_variables],
    )

    @jax.jit
    def forward(trainable, non_trainable, images):
        features, _ = backbone.stateless_call(trainable, non_trainable, images, training=False)
        return features

    images = jax.device_put(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)))
    images = images.astype(keras.mixed_precision.global_policy().compute_dtype)
    forward(*state, images).block_until_ready()  # compile
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        forward(*state, images).block_until_ready()
        seconds.append(time.perf_counter() - started)
    keras.mixed_precision.set_global_policy("float32")
    median = statistics.median(seconds)
    return {
        "backbone": name,
        "image_size": size,
        "batch_size": batch,
        "precision": policy,
        "median_batch_s": round(median, 5),
        "images_per_s": round(batch / median, 1),
    }


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--quick", action="store_true", help="a small smoke test (CPU)")
    cli.add_argument(
        "--output", default=str(Path(__file__).with_name("results-gpu.json")), help="JSON file"
    )
    args = cli.parse_args()
    plan = QUICK if args.quick else FULL
    device = jax.devices()[0]
    results = {
        "label": "Keras on JAX (not TensorFlow): keras.applications, random weights, jitted "
        "stateless forward pass with max pooling, median of timed batches after compiling",
        "device": getattr(device, "device_kind", str(device)),
        "platform": device.platform,
        "jax": jax.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "runs": [],
    }
    for name in plan["backbones"]:
        for size in plan["sizes"]:
            for policy in plan["policies"]:
                for batch in plan["batches"]:
                    run = throughput(name, size, batch, policy, plan["repeats"])
                    results["runs"].append(run)
                    print(json.dumps(run), flush=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
