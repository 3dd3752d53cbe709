"""Export's last check: the SavedModel about to be published serves what evaluate scored.

Export runs it as ``python -m shapes_pipeline.steps.verify`` in a fresh process, so nothing left in
memory from training or evaluation (traced functions, variables) can stand in for the
files: only what is on disk is loaded, and it is fed the test images' bytes as a client
would send them: a stratified sample of the test images (the same one evaluate checked
serving on), read from the data set's shards.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from shapes_pipeline.helpers import dataset, predictions
from shapes_pipeline.helpers.step import InputError

TOLERANCE = 1e-4


class VerificationError(InputError):
    """The written model does not reproduce the evaluation; it must not be published."""


def verify(
    model_dir: str,
    dataset_dir: str,
    predictions_path: str,
    sample: int,
    tolerance: float = TOLERANCE,
) -> dict:
    """Same classes, and on evaluate's stratified sample of ``sample`` test images the same
    predicted class and probabilities within ``tolerance`` of the evaluation's; returns
    what was checked."""
    from shapes_pipeline.helpers import serving  # TensorFlow
    from shapes_pipeline.steps.evaluate import stratified_sample
    from shapes_pipeline.steps.scoring import score_images

    expected_classes, expected = predictions.read(predictions_path)
    manifest = dataset.read_manifest(dataset_dir)
    rows = [i for i, e in enumerate(manifest) if e.split == "test"]
    test = [manifest[i].path for i in rows]
    if sorted(test) != sorted(expected):
        raise VerificationError(
            f"{predictions_path}: does not hold the test images of {dataset_dir}"
        )
    predict, classes = serving.load(model_dir)
    if classes != expected_classes:
        raise VerificationError(
            f"{model_dir}: classes {classes}, but evaluation scored {expected_classes}"
        )
    labels = dataset.label_indices([manifest[i] for i in rows], classes, dataset_dir)
    chosen = stratified_sample(labels, sample)
    served = score_images(predict, dataset_dir, np.asarray(rows)[chosen])
    worst = 0.0
    for i in chosen:
        path, row = test[i], served[rows[i]]
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
    return {"images": len(chosen), "max_difference": worst, "tolerance": tolerance}


def main(argv: list[str] | None = None) -> None:
    cli = argparse.ArgumentParser(
        prog="python -m shapes_pipeline.steps.verify", description=__doc__
    )
    cli.add_argument("model_dir")
    cli.add_argument("dataset_dir")
    cli.add_argument("predictions")
    cli.add_argument("sample", type=int)
    args = cli.parse_args(argv)
    try:
        result = verify(args.model_dir, args.dataset_dir, args.predictions, args.sample)
    except InputError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
