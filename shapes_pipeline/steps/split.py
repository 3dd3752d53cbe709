"""Step 1: split a folder of class sub-folders into train, validation and test shards.

Train/test follows the notebook exactly (per class: sorted files, shuffled by a fresh
``random.Random(seed)``, the first ``int(train_fraction * n)`` to train), so the real Basic
Shapes data lands in the notebook's split. Validation is carved out of train, per class,
for early stopping; the test part is never seen in training.

Files are compared by content (sha256) before anything is written: the same image in two
classes, or in both training data (train or val) and test, is an error naming the files;
copies inside one class and class imbalance are warnings in ``split.json`` and the report.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

from shapes_pipeline.helpers import archive, shards, storage
from shapes_pipeline.helpers.dataset import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    SPLITS,
    DataError,
    Example,
    check_image,
    sha256_of,
    write_manifest,
)
from shapes_pipeline.helpers.facts import SplitFacts
from shapes_pipeline.helpers.step import lap


def notebook_split(
    files: list[str], seed: int, train_fraction: float
) -> tuple[list[str], list[str]]:
    """The notebook's rule for one class.

    Same as its ``random.seed(seed); files.sort(); random.shuffle(files)``, cut at
    ``int(train_fraction * n)``.
    """
    ordered = sorted(files)
    random.Random(seed).shuffle(ordered)
    cut = int(train_fraction * len(ordered))
    return ordered[:cut], ordered[cut:]


def carve_validation(
    train: list[str], seed: int, val_fraction: float
) -> tuple[list[str], list[str]]:
    """Moves ``round(val_fraction * n)`` of one class's train files to val (at least one)."""
    if val_fraction <= 0:
        return train, []
    n_val = max(1, round(val_fraction * len(train)))
    val = set(random.Random(seed).sample(train, min(n_val, len(train))))
    return [f for f in train if f not in val], [f for f in train if f in val]


@contextmanager
def local_source(source: str) -> Iterator[Path]:
    """The data folder as a local path: a ``gs://`` prefix is downloaded to a temporary
    folder, a ``.zip`` (local or ``gs://``) checked and unpacked into one."""
    if source.lower().endswith(".zip"):
        with tempfile.TemporaryDirectory(prefix="shapes-data-") as tmp:
            if not storage.is_gcs(source) and not os.path.isfile(source):
                raise DataError(f"{source}: no such file")
            try:
                local = storage.copy_to_local(source, f"{tmp}/data.zip")
            except storage.StorageError as e:
                raise DataError(str(e)) from e
            yield archive.extract(local, Path(tmp, "data"), shown_as=source)
        return
    if not storage.is_gcs(source) and not os.path.isdir(source):
        raise DataError(f"{source}: not an existing folder")
    with ExitStack() as stack:
        try:  # the download; errors of the caller's body are not storage's
            local = stack.enter_context(storage.local_tree(source))
        except storage.StorageError as e:
            raise DataError(str(e)) from e
        yield Path(local)


def find_images(
    root: Path, source: str, max_pixels: int = MAX_PIXELS
) -> tuple[dict[str, list[str]], dict[tuple[str, str], str]]:
    """Class name -> image file names, and (class, file) -> sha256, after checking every
    image decodes. The checks run on a thread per core (decoding and hashing release
    Python's lock); the first bad file in sorted order is the one reported.

    ``source`` is the name the user gave (a local path or ``gs://`` URI), used in errors.
    """
    entries = checked_entries(root, root, source)
    classes = sorted(d.name for d in entries if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"{source}: found {len(classes)} class folder(s) {classes}, need at least 2"
        )
    found = {}
    for name in classes:
        inside = checked_entries(root / name, root, source)
        files = sorted(f.name for f in inside if is_image_file(f))
        if not files:
            raise DataError(f"{storage.join(source, name)}: class folder has no images")
        found[name] = files
    keys = [(c, f) for c, files in found.items() for f in files]

    def inspect(key: tuple[str, str]) -> str:
        check_image(root / key[0] / key[1], storage.join(source, *key), max_pixels)
        return sha256_of(root / key[0] / key[1])

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        hashes = dict(zip(keys, pool.map(inspect, keys), strict=True))
    return found, hashes


def checked_entries(folder: Path, root: Path, source: str) -> list[Path]:
    """What ``folder`` holds, refusing what would break a later step or a log line: names
    that are not UTF-8 or hold control characters (shown escaped), links leading out of the
    data folder, and what cannot be read."""
    shown = storage.join(source, folder.relative_to(root).as_posix()) if folder != root else source
    try:
        entries = list(folder.iterdir())
    except PermissionError as e:
        raise DataError(f"{shown}: cannot read this folder (permission denied)") from e
    for entry in entries:
        if not entry.name.isprintable():  # control characters, or bytes that are not UTF-8
            raise DataError(
                f"{shown}: holds {entry.name!r}, a name that is not UTF-8 or has control "
                "characters; rename it"
            )
        if entry.is_symlink() and not entry.resolve().is_relative_to(root.resolve()):
            raise DataError(
                f"{storage.join(shown, entry.name)}: a link to {entry.resolve()}, outside the "
                "data folder; copy what it points to into the folder instead"
            )
    return entries


def is_image_file(path: Path) -> bool:
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
    )


def ignored_entries(root: Path, classes: list[str]) -> list[str]:
    """What the data folder holds besides class folders of images (hidden files, other
    file types, files beside the class folders, sub-folders inside a class): not data."""
    ignored = [p for p in root.iterdir() if p.name not in classes]
    for name in classes:
        ignored += [p for p in (root / name).iterdir() if not is_image_file(p)]
    return sorted(p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in ignored)


FACTS = "split.json"
MAX_IMBALANCE = 3.0  # largest class / smallest class beyond which the report warns


def content_checks(
    hashes: dict[tuple[str, str], str], plan: dict[str, dict[str, list[str]]], source: str
) -> list[str]:
    """Errors for leaks between classes or into test; warnings for copies and imbalance.

    ``hashes``: (class, file) -> sha256 of every image.
    """
    copies = defaultdict(list)
    for key, digest in sorted(hashes.items()):
        copies[digest].append(key)
    split_of = {
        (label, file): name
        for label, parts in plan.items()
        for name, files in parts.items()
        for file in files
    }
    warnings = []
    for group in (g for g in copies.values() if len(g) > 1):
        names = ", ".join(storage.join(source, label, file) for label, file in group)
        if len({label for label, _ in group}) > 1:
            raise DataError(f"the same image is in two classes: {names}; keep it in one")
        if "test" in {split_of[k] for k in group} and len({split_of[k] for k in group}) > 1:
            raise DataError(
                f"the same image would be in both training and test data: {names}; "
                "remove the copies"
            )
        warnings.append(f"duplicate images (same content) in class {group[0][0]}: {names}")
    sizes = {label: sum(map(len, parts.values())) for label, parts in plan.items()}
    largest, smallest = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
    if sizes[largest] > MAX_IMBALANCE * sizes[smallest]:
        warnings.append(
            f"class imbalance: {largest} has {sizes[largest]} images, {smallest} "
            f"{sizes[smallest]} (more than {MAX_IMBALANCE:g}x); accuracy can hide a poorly "
            "recognised small class, so read the per-class recall"
        )
    return warnings


def prepare(
    root: Path,
    source: str,
    *,
    seed: int,
    train_fraction: float,
    val_fraction: float,
    max_pixels: int = MAX_PIXELS,
) -> tuple[dict[str, dict[str, list[str]]], dict[tuple[str, str], str], list[str]]:
    """The plan, every image's hash and the warnings, after every check; writes nothing."""
    images, hashes = find_images(root, source, max_pixels)
    plan = plan_split(
        images, source, seed=seed, train_fraction=train_fraction, val_fraction=val_fraction
    )
    warnings = content_checks(hashes, plan, source)
    ignored = ignored_entries(root, list(images))
    if ignored:
        shown = ", ".join(ignored[:10]) + (
            f" and {len(ignored) - 10} more" if len(ignored) > 10 else ""
        )
        warnings.append(
            f"ignored {len(ignored)} entries of {source} that are not images in a class "
            f"folder (sub-folders of a class are not read): {shown}"
        )
    return plan, hashes, warnings


def scan(source: str, **split: float) -> dict[str, list[str]]:
    """Validates a data folder without writing anything: what ``run`` checks before starting.

    ``split``: ``seed``, ``train_fraction``, ``val_fraction`` and ``max_pixels``, as the
    split step gets them.
    """
    with local_source(source) as root:
        plan, _, _ = prepare(root, source, **split)
    return {label: [f for part in parts.values() for f in part] for label, parts in plan.items()}


def plan_split(
    images: dict[str, list[str]],
    source: str,
    *,
    seed: int,
    train_fraction: float,
    val_fraction: float,
) -> dict[str, dict[str, list[str]]]:
    """Class -> split -> files, refusing any class that would leave a split empty."""
    plan = {}
    for label, files in images.items():
        train, test = notebook_split(files, seed, train_fraction)
        train, val = carve_validation(train, seed, val_fraction)
        parts = {"train": train, "val": val, "test": test}
        empty = [s for s, part in parts.items() if not part and (s != "val" or val_fraction > 0)]
        if empty:
            raise DataError(
                f"{storage.join(source, label)}: {len(files)} image(s) leave the "
                f"{'/'.join(empty)} split empty; add images to this class"
            )
        plan[label] = parts
    return plan


def split_dataset(
    source: str,
    out_dir: str,
    *,
    seed: int,
    train_fraction: float,
    val_fraction: float,
    max_pixels: int = MAX_PIXELS,
    shard_mb: float = shards.DEFAULT_SHARD_MB,
) -> SplitFacts:
    """Writes ``manifest.csv``, the TFRecord shards of every split (``shards.json``
    indexes them) and ``split.json``; returns the facts.

    Everything is checked before the first file is written; images are read one at a time.
    """
    lap("import")
    with local_source(source) as root:
        plan, hashes, warnings = prepare(
            root, source, seed=seed, train_fraction=train_fraction, val_fraction=val_fraction,
            max_pixels=max_pixels,
        )  # fmt: skip
        examples, files = [], []
        for label, parts in plan.items():
            for split_name, names in parts.items():
                for file in names:
                    rel = f"{split_name}/{label}/{file}"
                    examples.append(Example(rel, label, split_name, hashes[label, file]))
                    files.append(root / label / file)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        sources = [f"{e.label}/{f.name}" for e, f in zip(examples, files, strict=True)]
        index = shards.write(out_dir, examples, files, sources, list(plan), shard_mb, seed)
    facts = SplitFacts(
        source=source,
        classes=list(plan),
        counts={s: {c: len(plan[c][s]) for c in plan} for s in SPLITS},
        manifest_sha256=write_manifest(examples, out_dir),
        shards=len(index["shards"]),
        shard_mb=shard_mb,
        warnings=warnings,
    )
    Path(out_dir, FACTS).write_text(json.dumps(facts, indent=2))
    return facts
