"""Scoring a served model on a data set's test images, read from its shards: the
challenger's serving check, the production model in the gate, and export's reload check."""

from __future__ import annotations

import numpy as np

from shapes_pipeline.helpers import serving, shards, storage
from shapes_pipeline.helpers.step import InputError


def score_images(
    predict, dataset_dir: str, rows: np.ndarray, chunk: int = 512
) -> dict[int, np.ndarray]:
    """Manifest row -> probabilities of ``predict`` (encoded images -> probabilities) on the
    test images of ``rows``, read from their shards a chunk at a time."""
    scored, pending = {}, []

    def flush() -> None:
        if pending:
            for (row, _), probs in zip(pending, predict([b for _, b in pending]), strict=True):
                scored[row] = probs
            pending.clear()

    for row, image in shards.image_rows(dataset_dir, "test", set(rows.tolist())):
        pending.append((row, image))
        if len(pending) >= chunk:
            flush()
    flush()
    return scored


def score_champion(
    uri: str, dataset_dir: str, rows: np.ndarray, classes: list[str], batch_size: int
) -> dict:
    """The production model (``uri``), scored on this run's test images of ``rows``:
    ``probabilities`` (row -> probabilities) None where it cannot be compared (other
    classes, or a format older than serving from encoded images); ``classes`` its
    classes, None if unknown."""
    with storage.local_tree(uri) as local:
        try:
            predict, champion_classes = serving.load(local, batch_size)
        except InputError:  # an older format: nothing to compare with
            return {"uri": uri, "probabilities": None, "classes": None}
        if champion_classes != classes:
            return {"uri": uri, "probabilities": None, "classes": champion_classes}
        scored = score_images(predict, dataset_dir, rows)
        return {"uri": uri, "probabilities": scored, "classes": champion_classes}
