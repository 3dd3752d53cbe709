"""Export's last check: the SavedModel about to be published serves what evaluate scored.

Export runs it as ``python -m components.verify`` in a fresh process, so nothing left in
memory from training or evaluation (traced functions, variables) can stand in for the
files: only what is on disk is loaded, and it is fed the test images' bytes as a client
would send them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from components import dataset, predictions
from components.step import InputError

TOLERANCE = 1e-4


class VerificationError(InputError):
    """The written model does not reproduce the evaluation; it must not be published."""


def verify(
    model_dir: str, dataset_dir: str, predictions_path: str, tolerance: float = TOLERANCE
) -> dict:
    """Same classes, same predicted class for every test image, probabilities within
    ``tolerance`` of the evaluation's; returns what was checked."""
    from components import model  # TensorFlow

    expected_classes, expected = predictions.read(predictions_path)
    test = [e.path for e in dataset.read_manifest(dataset_dir) if e.split == "test"]
    if sorted(test) != sorted(expected):
        raise VerificationError(
            f"{predictions_path}: does not hold the test images of {dataset_dir}"
        )
    predict, classes = model.load(model_dir)
    if classes != expected_classes:
        raise VerificationError(
            f"{model_dir}: classes {classes}, but evaluation scored {expected_classes}"
        )
    served = predict([Path(dataset_dir, p) for p in test])
    worst = 0.0
    for path, row in zip(test, served, strict=True):
        if row.argmax() != expected[path].argmax():
            raise VerificationError(
                f"{path}: the written model predicts {classes[row.argmax()]}, "
                f"evaluation {classes[expected[path].argmax()]}"
            )
        difference = float(np.abs(row - expected[path]).max())
        if difference > tolerance:
            raise VerificationError(
                f"{path}: probabilities differ from the evaluation's by {difference:.2e} "
                f"(more than {tolerance})"
            )
        worst = max(worst, difference)
    return {"images": len(test), "max_difference": worst, "tolerance": tolerance}


def main(argv: list[str] | None = None) -> None:
    cli = argparse.ArgumentParser(prog="python -m components.verify", description=__doc__)
    cli.add_argument("model_dir")
    cli.add_argument("dataset_dir")
    cli.add_argument("predictions")
    args = cli.parse_args(argv)
    try:
        result = verify(args.model_dir, args.dataset_dir, args.predictions)
    except InputError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
