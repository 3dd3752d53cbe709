"""Properties of the split, for generated inputs: the notebook's rule restated
independently, partitions, determinism, and no content across training and test. The
shards' properties are in test_properties_shards.py."""

import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from shapes_pipeline.helpers.dataset import SPLITS, DataError, read_manifest, sha256_of
from shapes_pipeline.steps.split import carve_validation, notebook_split, plan_split, split_dataset

NAMES = st.lists(
    st.text("abcXYZ019_() -.", min_size=1, max_size=6).map(lambda s: s + ".png"),
    unique=True,
    max_size=40,
)
SEEDS = st.integers(-(2**40), 2**40)
FRACTIONS = st.floats(0, 1)


def notebook(files: list[str], seed: int, train_fraction: float) -> tuple[list, list]:
    """The notebook's code for one class, as it reads (its own generator, seeded first)."""
    files = list(files)
    generator = random.Random()
    generator.seed(seed)
    files.sort()
    generator.shuffle(files)
    split_train = int(train_fraction * len(files))
    return files[:split_train], files[split_train:]


def val_count(n_train: int, val_fraction: float) -> int:
    """round(val_fraction * n) of a class's train files, at least one, at most all."""
    return 0 if val_fraction <= 0 else min(n_train, max(1, round(val_fraction * n_train)))


# The split rule ----------------------------------------------------------------------------


@given(files=NAMES, seed=SEEDS, fraction=FRACTIONS, data=st.data())
def test_notebook_split_is_the_notebooks_code_whatever_the_listing_order(
    files, seed, fraction, data
):
    """The train/test rule is the notebook's, for any file names, seed and fraction, and a
    directory listing's order cannot change it (the rule sorts first)."""
    listed = data.draw(st.permutations(files))
    train, test = notebook_split(listed, seed, fraction)
    assert (train, test) == notebook(files, seed, fraction)
    assert len(train) == int(fraction * len(files))


@given(train=NAMES, seed=SEEDS, val_fraction=st.floats(-0.5, 1))
def test_validation_is_round_of_train_at_least_one_and_moves_nothing_else(
    train, seed, val_fraction
):
    """Carving validation moves exactly ``round(val_fraction * n)`` (at least one) of the
    class's train files to val, keeps the rest in their order, and is a pure function."""
    kept, val = carve_validation(train, seed, val_fraction)
    assert len(val) == val_count(len(train), val_fraction)
    assert kept == [f for f in train if f not in val] and set(val) <= set(train)
    assert sorted(kept + val) == sorted(train)
    assert carve_validation(list(train), seed, val_fraction) == (kept, val)


CLASSES = st.dictionaries(
    st.sampled_from(["circles", "squares", "triangles", "stars", "a b"]),
    st.one_of(NAMES, NAMES.filter(lambda names: len(names) >= 8)),
    min_size=1,
    max_size=4,
)


@given(
    images=CLASSES,
    seed=SEEDS,
    train_fraction=st.one_of(FRACTIONS, st.floats(0.5, 0.9)),
    val_fraction=st.one_of(st.just(0.0), st.floats(0, 0.5)),
)
def test_plan_is_a_partition_per_class_with_test_as_the_notebooks(
    images, seed, train_fraction, val_fraction
):
    """Every file of every class is in exactly one split; test is the notebook's test part
    whatever ``val_fraction`` is (validation comes from train only); a class that would
    leave a split empty is refused, naming it; and shuffling the listing changes nothing."""
    expected = {}
    for label, files in images.items():
        train, test = notebook(files, seed, train_fraction)
        n_val = val_count(len(train), val_fraction)
        expected[label] = (train, test, n_val)
    empty = [
        label
        for label, (train, test, n_val) in expected.items()
        if len(train) == n_val or not test or (val_fraction > 0 and not n_val)
    ]
    kwargs = {"seed": seed, "train_fraction": train_fraction, "val_fraction": val_fraction}
    event("refused" if empty else "planned")
    if empty:
        with pytest.raises(DataError) as error:
            plan_split(images, "src", **kwargs)
        assert f"src/{empty[0]}: " in str(error.value) and "split empty" in str(error.value)
        return
    plan = plan_split(images, "src", **kwargs)
    assert list(plan) == list(images)
    for label, files in images.items():
        train, test, n_val = expected[label]
        parts = plan[label]
        assert parts["test"] == test
        assert sorted(parts["train"] + parts["val"]) == sorted(train)
        assert len(parts["val"]) == n_val
        every = parts["train"] + parts["val"] + parts["test"]
        assert sorted(every) == sorted(files)  # none lost, none twice
    relisted = {
        label: random.Random(seed).sample(files, len(files)) for label, files in images.items()
    }
    assert plan_split(relisted, "src", **kwargs) == plan


# No content across training and test, on real image folders ----------------------------------


def _png(path: Path, content: int) -> None:
    """A 2x2 grey PNG: the same ``content`` gives byte-identical files, another does not."""
    Image.new("RGB", (2, 2), (content % 256, content // 256, 7)).save(path)


@settings(max_examples=20)
@given(
    layout=st.lists(
        st.lists(st.sampled_from(["own"] * 6 + ["copy"] * 2 + ["shared"]), min_size=3, max_size=6),
        min_size=2,
        max_size=4,
    ),
    seed=st.integers(0, 2**32),
)
def test_no_image_content_is_in_both_training_and_test(layout, seed):
    """Class ``c``'s file ``i`` is ``layout[c][i]``: its own image, a byte-identical copy of
    its class's first file, or the one image shared by every class using it. The split
    either refuses, naming every file of one offending group (one image in two classes, or
    in both training and test data) and writing nothing, or no sha256 is in both train+val
    and test; copies inside one class are warnings, and a rerun writes the same manifest."""
    labels = [f"class{c}" for c in range(len(layout))]
    content = {}  # (label, file) -> content id
    for label, keys in zip(labels, layout, strict=True):
        for i, key in enumerate(keys):
            own = labels.index(label) * 10 + (0 if key == "copy" else i)
            content[label, f"img{i}.png"] = 999 if key == "shared" else own
    groups: dict[int, list[tuple[str, str]]] = {}
    for key, value in sorted(content.items()):
        groups.setdefault(value, []).append(key)
    test_of = {
        label: set(notebook([f for c, f in content if c == label], seed, 0.8)[1])
        for label in labels
    }
    offending = {}
    for members in groups.values():
        in_test = {file in test_of[label] for label, file in members}
        if len({label for label, _ in members}) > 1:
            offending[tuple(members)] = "the same image is in two classes"
        elif len(in_test) > 1:
            offending[tuple(members)] = "in both training and test data"
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        for (label, file), value in content.items():
            (src / label).mkdir(parents=True, exist_ok=True)
            _png(src / label / file, value)
        split = {"seed": seed, "train_fraction": 0.8, "val_fraction": 0.1}
        event(f"refused: {sorted(set(offending.values()))}" if offending else "split")
        if offending:
            with pytest.raises(DataError) as error:
                split_dataset(str(src), str(out), **split)
            message = str(error.value)
            assert "\n" not in message and not out.exists()
            named = [
                (members, kind)
                for members, kind in offending.items()
                if all(f"{src}/{label}/{file}" in message for label, file in members)
            ]
            assert named and named[0][1] in message, message
            return
        facts = split_dataset(str(src), str(out), **split)
        examples = read_manifest(out)
        training = {e.sha256 for e in examples if e.split in ("train", "val")}
        assert not training & {e.sha256 for e in examples if e.split == "test"}
        for label in labels:
            mine = sorted(Path(e.path).name for e in examples if e.label == label)
            assert mine == sorted(f for c, f in content if c == label)
        for e in examples:
            assert e.sha256 == sha256_of(src / e.label / Path(e.path).name)
        copies = [m for m in groups.values() if len(m) > 1]
        assert sum("duplicate images" in w for w in facts["warnings"]) == len(copies)
        again = split_dataset(str(src), str(Path(tmp, "again")), **split)
        assert again["manifest_sha256"] == facts["manifest_sha256"]


@settings(max_examples=15)
@given(
    sizes=st.lists(st.integers(3, 6), min_size=2, max_size=3),
    seed=st.integers(0, 2**32),
    parts=st.tuples(st.sampled_from(SPLITS), st.sampled_from(SPLITS)),
    data=st.data(),
)
def test_a_copy_in_test_and_in_train_or_val_is_refused(sizes, seed, parts, data):
    """One class gets a byte-identical copy: file ``b`` made the same as file ``a``, where
    the split puts ``a`` and ``b`` in ``parts``. Refused, naming both, when one of them is
    in test and the other is not (val counts as training data); a warning otherwise."""
    images = {f"class{c}": [f"img{i}.png" for i in range(n)] for c, n in enumerate(sizes)}
    split = {"seed": seed, "train_fraction": 0.8, "val_fraction": 0.1}
    label = data.draw(st.sampled_from(sorted(images)))
    plan = plan_split(images, "src", **split)[label]
    a = data.draw(st.sampled_from(plan[parts[0]]))
    b = data.draw(st.sampled_from([f for f in plan[parts[1]] if f != a] or [None]))
    assume(b is not None)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        for c, (name, files) in enumerate(images.items()):
            (src / name).mkdir(parents=True)
            for i, file in enumerate(files):
                _png(src / name / file, c * 10 + i)
        shutil.copyfile(src / label / a, src / label / b)
        if "test" in parts and len(set(parts)) > 1:
            with pytest.raises(DataError) as error:
                split_dataset(str(src), str(out), **split)
            message = str(error.value)
            assert "in both training and test data" in message and "\n" not in message
            assert f"{src}/{label}/{a}" in message and f"{src}/{label}/{b}" in message
            assert not out.exists()
            return
        facts = split_dataset(str(src), str(out), **split)
        (warning,) = facts["warnings"]
        assert f"duplicate images (same content) in class {label}" in warning
        assert f"{src}/{label}/{a}" in warning and f"{src}/{label}/{b}" in warning
