"""The commands on a registry's models: ``predict``, ``models`` and ``promote`` (the
parser in ``shapes_pipeline/runners/cli.py`` names them)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.runners.exits import EXIT_OK, fail


def image_files(paths: list[str]) -> list[str]:
    """The images to classify: files as given, folders' images (recursively, sorted)."""
    from shapes_pipeline.helpers.dataset import IMAGE_SUFFIXES

    found = []
    for given in paths:
        if os.path.isdir(given):
            inside = sorted(p for p in Path(given).rglob("*") if p.is_file())
            found += [str(p) for p in inside if p.suffix.lower() in IMAGE_SUFFIXES]
        elif os.path.isfile(given):
            found.append(given)
        else:
            raise InputError(f"{given}: no such file or folder")
    if not found:
        raise InputError(f"{' '.join(paths)}: no images")
    return found


def cmd_predict(args: argparse.Namespace) -> int:
    from shapes_pipeline.helpers import dataset, registry, storage

    try:
        images = image_files(args.images)
        for image in images:
            dataset.check_image(image)
        version = registry.resolve(args.model, args.model_name)
        from shapes_pipeline.helpers import (
            serving,  # TensorFlow, only once the inputs are known to be good
        )

        with storage.local_tree(version) as local:
            predict, classes = serving.load(local)
            probabilities = predict([Path(p) for p in images])
    except InputError as e:
        fail(str(e))
    rows = [
        {
            "path": path,
            "class": classes[int(row.argmax())],
            "probabilities": {c: round(float(p), 6) for c, p in zip(classes, row, strict=True)},
        }
        for path, row in zip(images, probabilities, strict=True)
    ]
    if args.output == "json":
        print("\n".join(json.dumps(row) for row in rows))
    else:
        width = max(len(r["path"]) for r in rows)
        print(f"{'image':<{width}}  {'class':<16}  probability")
        for r in rows:
            print(f"{r['path']:<{width}}  {r['class']:<16}  {r['probabilities'][r['class']]:.4f}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from shapes_pipeline.helpers import registry

    try:
        found, problem = registry.listing(args.registry, args.model_name, must_exist=True)
    except InputError as e:
        fail(str(e))
    if args.output == "json":
        print(json.dumps(found, indent=2))
    elif not found:
        print(f"no versions of {args.model_name} in {args.registry}")
    else:
        print(f"{'':2}{'version':<28}{'created':<27}{'test accuracy':>14}  backbone")
        for v in found:
            mark = "! " if v.get("damaged") else "* " if v["production"] else "  "
            accuracy = v.get("metrics", {}).get("test_accuracy", float("nan"))
            created, backbone = v.get("created", "?"), v.get("backbone", "?")
            print(f"{mark}{v['version']:<28}{created:<27}{accuracy:>14.4f}  {backbone}")
        damaged = any(v.get("damaged") for v in found)
        print(
            "! production (LATEST), damaged: its files are not the ones published"
            if damaged
            else "! LATEST is broken: no production version"
            if problem
            else "* production (LATEST)"
        )
    if problem:
        fail(problem)
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    from shapes_pipeline.helpers import registry, storage

    try:
        before = registry.promote_to(args.registry, args.model_name, args.version)
    except InputError as e:
        fail(str(e))
    was = before.strip() if before and storage.is_text(before) and before.strip() else None
    if args.output == "json":
        print(json.dumps({"model_name": args.model_name, "production": args.version, "was": was}))
    else:
        print(f"{args.model_name}: production is now {args.version} (was {was or 'none'})")
    return EXIT_OK
