"""Demo data in the Kaggle "Basic Shapes" layout, for machines that cannot download it.

Shapes are drawn at 8x the output size with a wobbly pen (low-frequency noise on the
outline, jittered corners, varied stroke width), then downsampled, so they look
hand-drawn rather than rasterised.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circles", "squares", "triangles")
_SUPERSAMPLE = 8


def _wobble(rng: random.Random) -> Callable[[float], float]:
    """A smooth random radial offset: a few low-frequency sines with random phases."""
    terms = [(k, rng.uniform(0.0, 0.05) / k, rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5)]
    return lambda t: sum(a * math.sin(k * t + p) for k, a, p in terms)


def _outline(shape: str, rng: random.Random) -> list[tuple[float, float]]:
    """Points of the shape's outline on a unit scale, centred on 0, before rotation."""
    wobble = _wobble(rng)
    if shape == "circles":
        squash = rng.uniform(0.85, 1.15)
        return [
            (
                (1 + wobble(t)) * math.cos(t) * squash,
                (1 + wobble(t)) * math.sin(t) / squash,
            )
            for t in (2 * math.pi * i / 64 for i in range(64))
        ]
    corners = 4 if shape == "squares" else 3
    angles = [2 * math.pi * i / corners + math.pi / corners for i in range(corners)]
    vertices = [
        (math.cos(a) + rng.gauss(0, 0.06), math.sin(a) + rng.gauss(0, 0.06)) for a in angles
    ]
    points = []
    for i, (x0, y0) in enumerate(vertices):
        x1, y1 = vertices[(i + 1) % corners]
        for j in range(16):
            f = j / 16
            wiggle = wobble(2 * math.pi * (i + f) / corners)
            points.append(
                (x0 + f * (x1 - x0) + wiggle * (y1 - y0), y0 + f * (y1 - y0) - wiggle * (x1 - x0))
            )
    return points


def draw_shape(shape: str, rng: random.Random, size: int = 28) -> Image.Image:
    """One RGB image of ``shape``: dark pen on a light background, random pose and pen."""
    big = size * _SUPERSAMPLE
    background = rng.randint(225, 255)
    image = Image.new("RGB", (big, big), (background,) * 3)
    radius = rng.uniform(0.22, 0.38) * big
    cx = big / 2 + rng.uniform(-0.1, 0.1) * big
    cy = big / 2 + rng.uniform(-0.1, 0.1) * big
    turn = rng.uniform(0, 2 * math.pi)
    cos, sin = math.cos(turn), math.sin(turn)
    points = [
        (cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos))
        for x, y in _outline(shape, rng)
    ]
    pen = rng.randint(0, 60)
    width = int(rng.uniform(0.05, 0.12) * big)
    ImageDraw.Draw(image).line([*points, points[0]], fill=(pen,) * 3, width=width, joint="curve")
    return image.resize((size, size), Image.Resampling.LANCZOS)


def generate(out_dir: str, per_class: int = 100, seed: int = 0) -> list[Path]:
    """Writes ``out_dir/<shape>/<shape>_NNN.png``; the same seed gives the same bytes."""
    rng = random.Random(seed)
    written = []
    for shape in SHAPES:
        folder = Path(out_dir, shape)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / f"{shape[:-1]}_{i:03d}.png"
            draw_shape(shape, rng).save(path)
            written.append(path)
    return written
