"""``predictions.csv``: evaluate's score of every test image, one row each (``path``,
``true_class``, ``predicted_class``, and ``p_<class>`` per class, in the model's order),
which export's verification and the report read back. One writer, one reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PROBABILITY = "p_"


def write(
    path: str | Path,
    paths: list[str],
    classes: list[str],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probabilities: np.ndarray,
) -> None:
    frame = pd.DataFrame(
        {
            "path": paths,
            "true_class": [classes[i] for i in y_true],
            "predicted_class": [classes[i] for i in y_pred],
        }
    )
    columns = pd.DataFrame(probabilities, columns=[PROBABILITY + c for c in classes])
    table = pd.concat([frame, columns], axis=1).set_index("path")
    table.to_csv(path, float_format="%.6f")


def read(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """The classes, and each test image's probabilities by its path."""
    # Class and file names are text, whatever they look like ("NA", "1e3"):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    columns = [c for c in frame.columns if c.startswith(PROBABILITY)]
    values = frame[columns].to_numpy(dtype=np.float64)
    return [c[len(PROBABILITY) :] for c in columns], dict(zip(frame["path"], values, strict=True))
