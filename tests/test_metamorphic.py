"""Metamorphic checks of the ML steps: relations between two runs that must hold whatever
the exact numbers are, here for input order and class names. Augmentation settings, stored
precision and training options are in test_metamorphic_augmentation.py; the data (15
images of waves, far apart) and the backbone (a random VGG16 at 32 px) are in waves.py.
"""

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import waves
from helpers import (
    assert_varied,
    cli_here,
    evaluate_oracle,
    feature_dirs,
    images_by_path,
    save_oracle,
    save_oracle_features,
    train_args,
    tree_bytes,
)
from waves import CYCLES, HEAD, SETTINGS, features, probabilities_by_path, split, write_waves

from shapes_pipeline.helpers import dataset, shards
from shapes_pipeline.helpers.predictions import read as read_predictions

pytestmark = pytest.mark.slow  # extracts and trains

# the shared fixtures this module's tests take (built once a session: see waves.py)
waves_source, waves_split, waves_model = waves.waves_source, waves.waves_split, waves.waves_model


# 1. Input order ---------------------------------------------------------------------------


def test_predict_gives_each_image_its_own_probabilities_whatever_the_order(
    waves_model, waves_split, tmp_path
):
    """``predict`` given the same files in another order: each file gets the probabilities
    it got before, keyed by its path (the rows differ, so a mix-up shows)."""
    version = tmp_path / "version"
    shutil.copytree(waves_model, version)
    (version / "metadata.json").write_text("{}")
    files = []
    for path, image in sorted(images_by_path(waves_split, "train").items()):
        files.append(tmp_path / "images" / path.replace("/", "_"))
        files[-1].parent.mkdir(exist_ok=True)
        files[-1].write_bytes(image)

    def predicted(order: list[Path]) -> dict[str, list[float]]:
        done = cli_here("predict", "--model", str(version), *map(str, order), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        assert [r["path"] for r in rows] == [str(p) for p in order]
        return {r["path"]: list(r["probabilities"].values()) for r in rows}

    first = predicted(files)
    assert_varied(np.array(list(first.values())), margin=1e-5)
    shuffled = files[::-1]
    random.Random(1).shuffle(shuffled)
    for order in (files[::-1], shuffled):
        assert predicted(order) == first


def test_training_on_feature_records_in_another_order_gives_the_same_model(
    waves_model, waves_split, tmp_path
):
    """Every feature shard's records shuffled (as another grouping or writer would order
    them): the same history, epoch for epoch, and the same probabilities for every image."""
    import tensorflow as tf

    from shapes_pipeline.steps.train import train

    (folder,) = feature_dirs(waves_model)
    shuffled = tmp_path / "features"
    shutil.copytree(folder, shuffled)
    for n, path in enumerate(sorted(shuffled.glob("*.tfrecord"))):
        records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
        random.Random(n).shuffle(records)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in records:
                writer.write(record)
    assert features(shuffled).keys() == features(folder).keys()
    train(str(waves_split), [str(shuffled)], str(tmp_path / "m"),
          **train_args(batch_size=32, **HEAD, **SETTINGS))  # fmt: skip
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert history == json.loads((waves_model / "history.json").read_text())
    again = probabilities_by_path(tmp_path / "m", waves_split)
    before = probabilities_by_path(waves_model, waves_split)
    for path, row in before.items():
        np.testing.assert_array_equal(again[path], row, err_msg=path)


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_the_split_does_not_depend_on_the_order_the_folder_lists_its_files(
    waves_source, waves_split, tmp_path, monkeypatch, order
):
    """A file system (or bucket) listing the class folders and their files in another order
    gives the same data set byte for byte: manifest, shards (labels included), index; so
    every later step, and every image's prediction, is the same."""
    listed = Path.iterdir

    def another_order(self):
        entries = sorted(listed(self))
        if order == "reversed":
            return iter(entries[::-1])
        random.Random(str(self.name)).shuffle(entries)
        return iter(entries)

    monkeypatch.setattr(Path, "iterdir", another_order)
    split(waves_source, tmp_path / "dataset")
    monkeypatch.undo()
    assert tree_bytes(tmp_path / "dataset") == tree_bytes(waves_split)


# 2. Class names ---------------------------------------------------------------------------

# coarse, fine, medium -> zigzag, alpha, mid: the sorted order becomes fine, medium, coarse
RENAMED = {"coarse": "zigzag", "fine": "alpha", "medium": "mid"}


def _renamed_path(path: str) -> str:
    split_name, label, file = path.split("/")
    return f"{split_name}/{RENAMED[label]}/{file}"


def test_renaming_class_folders_relabels_each_images_features(waves_model, waves_split, tmp_path):
    """Class folders renamed so that their sorted order changes: every image gets the
    features it got before, labelled with its new class's place among the sorted new
    names (the index the model's outputs follow)."""
    from shapes_pipeline.steps.extract import extract

    renamed = split(write_waves(tmp_path / "src", RENAMED), tmp_path / "dataset")
    extract(str(renamed), str(tmp_path / "f"), group=0, groups=1, batch_size=32, **SETTINGS)
    new_classes = sorted(RENAMED.values())
    assert shards.read_index(renamed)["classes"] == new_classes
    before = {e.path: (i, e.label) for i, e in enumerate(dataset.read_manifest(waves_split))}
    old = features(feature_dirs(waves_model)[0])
    new = features(tmp_path / "f")
    manifest = dataset.read_manifest(renamed)
    assert sorted(e.path for e in manifest) == sorted(_renamed_path(p) for p in before)
    moved = 0
    for path, (row, label) in before.items():
        new_row = next(i for i, e in enumerate(manifest) if e.path == _renamed_path(path))
        values, new_label = new[new_row, 0]
        np.testing.assert_array_equal(values, old[row, 0][0], err_msg=path)
        assert new_label == new_classes.index(RENAMED[label]), path
        moved += new_label != old[row, 0][1]
    assert moved == len(before)  # every class changed its index, so a mix-up shows


def test_renaming_class_folders_renames_the_evaluated_predictions(tmp_path):
    """The same network under renamed classes (its outputs reordered to the new names'
    sorted order), evaluated on the data with renamed folders: each image gets its
    predictions renamed, probabilities permuted with the columns, nothing else changes."""
    gains = np.array([[0.02, 0.0, -0.01], [0.0, 0.015, 0.0], [-0.01, 0.0, 0.02]], np.float32)
    old = sorted(CYCLES)  # coarse, fine, medium
    results = {}
    for name, names in (("before", None), ("after", RENAMED)):
        root = tmp_path / name
        classes = sorted((names or {}).get(c, c) for c in old)
        # column of class c: the column the class had before renaming
        kernel = gains[:, [old.index(next(o for o in old if (names or {}).get(o, o) == c))
                           for c in classes]]  # fmt: skip
        split(write_waves(root / "src", names), root / "ds")
        save_oracle(root / "model", kernel, np.zeros(3, np.float32), classes)
        save_oracle_features(root / "ds", root / "features")
        evaluation = evaluate_oracle(root)
        read_classes, rows = read_predictions(root / "predictions.csv")
        assert read_classes == classes
        with open(root / "predictions.csv") as f:
            predicted = {r["path"]: r["predicted_class"] for r in csv.DictReader(f)}
        results[name] = evaluation, classes, rows, predicted
    (e0, c0, rows0, p0), (e1, c1, rows1, p1) = results["before"], results["after"]
    assert {_renamed_path(p): RENAMED[c] for p, c in p0.items()} == p1
    assert_varied(np.array(list(rows0.values())))
    assert sorted(rows1) == sorted(_renamed_path(p) for p in rows0)
    for path, row in rows0.items():
        moved = rows1[_renamed_path(path)]
        for i, c in enumerate(c0):
            assert moved[c1.index(RENAMED[c])] == row[i], path
    assert e1["test_accuracy"] == e0["test_accuracy"]
    perm = [c0.index(next(o for o in c0 if RENAMED[o] == c)) for c in c1]
    assert np.array(e1["confusion_matrix"]).tolist() == (
        np.array(e0["confusion_matrix"])[np.ix_(perm, perm)].tolist()
    )
