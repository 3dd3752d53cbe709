"""The split data set as every step sees it: the manifest, the class order, the checks.

The manifest is the one source of truth for which image is in which split and with which
label; train and evaluate both read images and labels from it in manifest order, so
predictions can never drift from their labels.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shapes_pipeline.helpers.step import InputError

MANIFEST = "manifest.csv"
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
# Pillow's names of the formats TensorFlow's decode_image reads.
DECODABLE = frozenset({"PNG", "JPEG", "GIF", "BMP", "WEBP"})
MAX_PIXELS = 40_000_000  # per image: a 10000x10000 PNG can be 12 KB and take 1.5 GB


class DataError(InputError):
    """Input data that cannot be used; the message names the offending path."""


@dataclass(frozen=True)
class Example:
    path: str  # relative to the data set's root, e.g. ``test/circles/circle_001.png``
    label: str
    split: str
    sha256: str


def sha256_of(path: str | Path) -> str:
    """A file's SHA-256, read a block at a time: a model's weights need not fit in memory."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_image(
    path: str | Path, shown_as: str | None = None, max_pixels: int = MAX_PIXELS
) -> None:
    """Accepts exactly what the model's decoder (TensorFlow's ``decode_image``) reads: PNG,
    JPEG, GIF, BMP (uncompressed) and WebP, whatever the file is named, of at most
    ``max_pixels``; decodes the whole file, so truncated files fail here, not in training.

    ``shown_as`` names the file in the error as the user knows it (e.g. its ``gs://`` URI).
    """
    shown = shown_as or str(path)
    try:
        with warnings.catch_warnings():  # the size is checked below, against max_pixels
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                kind, (width, height) = image.format, image.size
                if kind not in DECODABLE or (kind == "BMP" and image.info.get("compression")):
                    raise DataError(
                        f"{shown}: a {kind} image, which the model cannot decode; use "
                        "PNG, JPEG, GIF, BMP (uncompressed) or WebP"
                    )
                if width * height > max_pixels:
                    raise DataError(
                        f"{shown}: {width}x{height} pixels, more than max_image_pixels "
                        f"{max_pixels}; shrink it or raise the limit"
                    )
                image.load()
    except Image.DecompressionBombError as e:  # more than twice Pillow's own limit
        raise DataError(f"{shown}: image too large ({e})") from e
    except PermissionError as e:
        raise DataError(f"{shown}: cannot read this file (permission denied)") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{shown}: not a readable image ({e})") from e


def write_manifest(examples: list[Example], dataset_dir: str | Path) -> str:
    """Writes ``manifest.csv`` and returns its sha256, which identifies the data set."""
    path = Path(dataset_dir, MANIFEST)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class", "split", "sha256"])
        for e in examples:
            writer.writerow([e.path, e.label, e.split, e.sha256])
    return sha256_of(path)


def read_manifest(dataset_dir: str | Path) -> list[Example]:
    with open(Path(dataset_dir, MANIFEST), newline="") as f:
        return [Example(r["path"], r["class"], r["split"], r["sha256"]) for r in csv.DictReader(f)]


def class_names(examples: list[Example]) -> list[str]:
    """The class order every step uses: sorted folder names, as Keras' directory loaders do."""
    return sorted({e.label for e in examples})


def label_indices(
    examples: list[Example], classes: list[str], dataset_dir: str | Path
) -> np.ndarray:
    """Each example's class as an index into ``classes`` (the model's output order)."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({e.label for e in examples} - index.keys())
    if unknown:
        raise DataError(f"{Path(dataset_dir, MANIFEST)}: classes {unknown} unknown to the model")
    return np.array([index[e.label] for e in examples], dtype=np.int64)
