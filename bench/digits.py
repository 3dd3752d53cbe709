"""Accuracy on data that is not shapes: scikit-learn's handwritten digits (1,797 real 8x8
scans, 10 classes), written out as PNGs and run through the whole pipeline, which upscales
them as it does any image.

Each variant is one ``shapes-pipeline run`` with MobileNet and the ImageNet weights of
``../shared/weights/`` (``--weights`` to point elsewhere): frozen, fine-tuned, and with
augmentation. Writes ``bench/digits.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = "mobilenet_1_0_224_imagenet_notop.weights.h5"
VARIANTS = {
    "frozen": [],
    "fine-tuned": [
        "--fine-tune-layers",
        "30",
        "--fine-tune-lr",
        "1e-4",
        "--fine-tune-epochs",
        "10",
    ],
    "augmented": ["--augment", "--augment-views", "4"],
}


def write_digits(out: Path) -> int:
    """Every digit as an 8-bit grey PNG in ``out/<digit>/``; returns how many."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        grey = (pixels * (255 / 16)).round().astype(np.uint8)  # values are 0..16
        Image.fromarray(grey, mode="L").save(folder / f"{i:04d}.png")
    return len(digits.target)


def find_weights() -> Path:
    for root in (REPO.parent / "shared" / "weights", Path("/work/shared/weights")):
        if (root / WEIGHTS).is_file():
            return root / WEIGHTS
    raise SystemExit(f"error: {WEIGHTS} not found in ../shared/weights/; pass --weights")


def run(data: Path, work: Path, weights: str, image_size: int, extra: list[str]) -> dict:
    summary = work / "summary.json"
    subprocess.run(
        [sys.executable, "-m", "shapes_pipeline.runners.cli", "run", "--data", str(data),
         "--registry", str(work / "registry"), "--pipeline-root", str(work / "runs"),
         "--summary", str(summary), "-q", "--backbone", "MobileNet", "--weights", weights,
         "--image-size", str(image_size), "--min-accuracy", "0", *extra],
        cwd=REPO, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    facts = json.loads(summary.read_text())
    return {
        "test_accuracy": facts["test_accuracy"],
        "accuracy_ci95": facts["accuracy_ci95"],
        "epochs_run": facts["epochs_run"],
        "seconds": facts["timings_s"],
        "peak_memory_mb": facts["peak_memory_mb"],
        "training": {k: facts["training"].get(k) for k in ("fine_tune_kept", "fine_tune_epochs")},
    }


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__)
    cli.add_argument("--weights", help="MobileNet's ImageNet weights without its top")
    cli.add_argument("--image-size", type=int, default=128)
    cli.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    cli.add_argument(
        "--seeds", type=int, nargs="+", default=[230],
        help="split and training seeds: each variant runs once per seed (the first is its "
        "figure; with several, by_seed holds them all), so a figure's spread shows",
    )  # fmt: skip
    cli.add_argument("--output", default=str(REPO / "bench" / "digits.json"))
    args = cli.parse_args()
    weights = args.weights or str(find_weights())
    results = {"image_size": args.image_size, "backbone": "MobileNet", "variants": {}}
    with tempfile.TemporaryDirectory(prefix="shapes-digits-") as tmp:
        data = Path(tmp, "digits")
        results["images"] = write_digits(data)
        for name in args.variants:
            by_seed = {}
            for seed in args.seeds:
                work = Path(tmp, f"{name}-{seed}")
                work.mkdir()
                extra = [*VARIANTS[name], "--seed", str(seed)]
                by_seed[seed] = run(data, work, weights, args.image_size, extra)
                print(name, seed, json.dumps(by_seed[seed]), flush=True)
            results["variants"][name] = dict(by_seed[args.seeds[0]])
            if len(args.seeds) > 1:
                accuracies = [r["test_accuracy"] for r in by_seed.values()]
                results["variants"][name] |= {
                    "by_seed": by_seed,
                    "median_test_accuracy": float(np.median(accuracies)),
                }
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
