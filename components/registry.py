"""The model registry's layout: ``<registry>/<model_name>/<version>/`` folders, and a
``LATEST`` file naming the production version, which only a passing gate moves."""

from __future__ import annotations

import json
import os
import re

from components import storage
from components.step import InputError

LATEST = "LATEST"
METADATA = "metadata.json"
# Model and version names become path segments: nothing that could leave the registry.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def path(registry: str, model_name: str, *names: str) -> str:
    """``registry/model_name/names...``, refusing a name that is not a plain segment."""
    for name in (model_name, *names):
        if not NAME.fullmatch(name):
            raise InputError(
                f"name {name!r}: use letters, digits, '.', '_' and '-' (at most 100, "
                "starting with a letter or digit)"
            )
    return storage.join(registry, model_name, *names)


def production_version(registry: str, model_name: str) -> str | None:
    """The production version's name, or None before the first export."""
    version = storage.read_text(path(registry, model_name, LATEST))
    return version.strip() if version else None


def production(registry: str, model_name: str) -> str | None:
    """The production version's URI, or None before the first export."""
    version = production_version(registry, model_name)
    return path(registry, model_name, version) if version else None


class PromotionConflict(InputError):
    """The production model is no longer the one the gate compared against."""


def promote(registry: str, model_name: str, version: str, *, replaces: str | None) -> None:
    """Makes ``version`` production only if ``replaces`` (the version the gate compared
    against; None: there was none) still is, so two gates passing at once cannot both win
    and no promotion rests on a comparison with a model that is no longer production."""
    try:
        storage.replace_text(
            path(registry, model_name, LATEST),
            f"{version}\n",
            expected=f"{replaces}\n" if replaces else None,
        )
    except storage.StorageConflict as e:
        raise PromotionConflict(
            f"{model_name}: production changed since the gate compared against "
            f"{replaces or 'no production model'} ({e}); {version} is not production"
        ) from e


def find_by_content(registry: str, model_name: str, content_sha256: str) -> dict | None:
    """The metadata of a published version holding exactly these files, if any. Only
    versions whose name ends with the files' hash (as export names them) are read."""
    for name in reversed(storage.list_folders(path(registry, model_name))):
        if name.endswith(f"-{content_sha256[:8]}"):
            text = storage.read_text(path(registry, model_name, name, METADATA))
            metadata = json.loads(text) if text else {}
            if metadata.get("content_sha256") == content_sha256:
                return metadata
    return None


def versions(registry: str, model_name: str, must_exist: bool = False) -> list[dict]:
    """Every published version's metadata, oldest first, each with ``production`` set.

    ``must_exist``: a registry that is not there is an InputError, not an empty list."""
    if must_exist and not storage.is_gcs(registry) and not os.path.isdir(registry):
        raise InputError(f"{registry}: no such registry folder")
    if must_exist and storage.is_gcs(registry):
        storage.check_bucket(registry)
    current = production_version(registry, model_name)
    found = []
    for name in storage.list_folders(path(registry, model_name)):
        text = storage.read_text(path(registry, model_name, name, METADATA))
        if text is not None:  # a version is published once its metadata is there
            found.append({**json.loads(text), "production": name == current})
    return found


def resolve(uri: str, model_name: str) -> str:
    """A version folder as it is, or a registry's production version."""
    if storage.read_text(storage.join(uri, METADATA)) is not None:
        return uri
    version = production(uri, model_name)
    if version is None:
        raise InputError(
            f"{uri}: neither a model version (no {METADATA}) nor a registry with a "
            f"production {model_name} (no {model_name}/{LATEST})"
        )
    return version
