"""Demo data: the Kaggle layout, 28x28 RGB, deterministic for a seed."""

from PIL import Image

from shapes_pipeline.helpers.dataset import sha256_of
from shapes_pipeline.helpers.demo_data import generate


def test_layout_size_and_determinism(tmp_path):
    a = generate(str(tmp_path / "a"), per_class=4, seed=0)
    b = generate(str(tmp_path / "b"), per_class=4, seed=0)
    c = generate(str(tmp_path / "c"), per_class=4, seed=1)
    assert sorted(p.parent.name for p in a) == ["circles"] * 4 + ["squares"] * 4 + ["triangles"] * 4
    for path in a:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (28, 28)
    assert [sha256_of(p) for p in a] == [sha256_of(p) for p in b]
    assert [sha256_of(p) for p in a] != [sha256_of(p) for p in c]


def test_images_vary(tmp_path):
    """Hand-drawn look: no two images of a class are the same drawing."""
    paths = generate(str(tmp_path), per_class=20, seed=0)
    assert len({sha256_of(p) for p in paths}) == len(paths)
