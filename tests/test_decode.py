"""One decoder for training, evaluation and serving: its pixels, checked against Pillow's.

Each case is a gradient (every pixel different, every channel different), so a decoder that
returned zeros, swapped channels or dropped a row would fail. The reference is Pillow's
conversion to RGB of the same file: alpha is dropped, not composited (as Pillow's
``convert("RGB")`` does). 16-bit images are the exception: Pillow's ``convert("RGB")`` clips
16-bit values at 255, so there the reference is Pillow's 16-bit values scaled to 8 bits.
"""

import io

import numpy as np
import pytest
from PIL import Image

from shapes_pipeline.helpers.images import decode

SIZE = 24
_y, _x = np.mgrid[0:SIZE, 0:SIZE]
RGB = Image.fromarray(np.stack([_x * 10, _y * 10, (_x + _y) * 5], -1).astype(np.uint8), "RGB")
ALPHA = Image.fromarray((_x * 10).astype(np.uint8), "L")
GREY16 = np.asarray(RGB.convert("L")).astype(np.uint16) * 257 + 3  # low byte not a copy


def encoded(mode: str) -> bytes:
    image = {
        "RGB": lambda: RGB,
        "L": lambda: RGB.convert("L"),
        "LA": lambda: Image.merge("LA", [RGB.convert("L"), ALPHA]),
        "RGBA": lambda: Image.merge("RGBA", [*RGB.split(), ALPHA]),
        "P": lambda: RGB.convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
        "I;16": lambda: Image.fromarray(GREY16),
        "CMYK": lambda: RGB.convert("CMYK"),
    }[mode]()
    out = io.BytesIO()
    image.save(out, format="JPEG" if mode == "CMYK" else "PNG")
    return out.getvalue()


def reference(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    if image.mode in ("I;16", "I"):
        grey = np.asarray(image).astype(np.float64) / 257
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB")).astype(np.float64)


@pytest.mark.parametrize(
    "mode, tolerance",
    [("RGB", 0), ("L", 0), ("LA", 0), ("RGBA", 0), ("P", 0), ("I;16", 0.5), ("CMYK", 1)],
)
def test_decoded_pixels_match_pillow(mode, tolerance):
    data = encoded(mode)
    assert Image.open(io.BytesIO(data)).mode == mode
    got = np.asarray(decode(data, SIZE))
    expected = reference(data)
    assert got.shape == (SIZE, SIZE, 3)
    assert np.abs(got - expected).max() <= tolerance
    assert expected.std() > 30  # the gradient is there to be lost


def test_alpha_is_dropped_not_composited():
    """Where alpha is 0, the colour underneath is what the model sees."""
    got = np.asarray(decode(encoded("RGBA"), SIZE))
    transparent = np.asarray(ALPHA) == 0
    assert transparent.any()
    np.testing.assert_array_equal(got[transparent], np.asarray(RGB)[transparent])
