"""The model registry's layout: ``<registry>/<model_name>/<version>/`` folders, and a
``LATEST`` file naming the production version, which only a passing gate moves."""

from __future__ import annotations

import json
import os
import re

from shapes_pipeline.helpers import artifact, storage
from shapes_pipeline.helpers.step import InputError

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


class RegistryError(InputError):
    """Registry state that would jam a run; the message names the file and the repair."""


def repair(registry: str, model_name: str) -> str:
    return (
        f"repair: shapes-pipeline promote --registry {registry} --model-name {model_name} "
        "--version VERSION"
    )


def production_version(registry: str, model_name: str) -> str | None:
    """The production version's name, or None before the first export. A ``LATEST`` that
    is empty, not text, or not a version's name is a RegistryError naming it."""
    uri = path(registry, model_name, LATEST)
    text = storage.read_text(uri)
    if text is None:
        return None
    version = text.strip()
    if not storage.is_text(text):
        problem = "is not text"
    elif not version:
        problem = "is empty"
    elif not NAME.fullmatch(version):
        problem = f"names {version!r}, which is not a version of this model's folder"
    else:
        return version
    raise RegistryError(f"{model_name}/{LATEST} {problem}; {repair(registry, model_name)}")


def metadata(registry: str, model_name: str, version: str) -> dict | None:
    """A version's metadata, None while it is not published; unreadable metadata is a
    RegistryError naming the file."""
    uri = path(registry, model_name, version, METADATA)
    text = storage.read_text(uri)
    return None if text is None else _metadata_of(uri, text)


def _metadata_of(uri: str, text: str) -> dict:
    """``text``, the metadata file at ``uri``, as its mapping, else a RegistryError."""
    try:
        found = json.loads(text)
        if isinstance(found, dict):
            return found
    except json.JSONDecodeError:
        pass
    raise RegistryError(
        f"{uri}: not valid JSON metadata; restore it from a backup, or remove its version "
        "folder if it is not in production"
    )


def check(registry: str, model_name: str) -> None:
    """Everything a run's export will need of the registry, checked before any step: a
    folder it can write, a ``LATEST`` naming a published version, readable metadata."""
    folder = path(registry, model_name)
    if not storage.is_gcs(registry):
        _check_writable(registry, folder)
    current = production_version(registry, model_name)
    names = storage.list_folders(folder)
    published = {name for name in names if metadata(registry, model_name, name) is not None}
    if current is not None and current not in published:
        state = "is not published (no metadata.json)" if current in names else "does not exist"
        raise RegistryError(
            f"{model_name}/{LATEST} names version {current}, which {state}; "
            f"{repair(registry, model_name)}"
        )
    if current is not None:
        verify(registry, model_name, current)


def verify_folder(uri: str, published: dict, fix: str) -> None:
    """A published version's files are the ones published: their hash is the
    ``content_sha256`` its metadata (``published``) recorded, else a RegistryError naming
    the folder and ``fix``. A truncated or missing file would otherwise surface minutes
    later, as a traceback in evaluate or predict. A version whose metadata records no hash
    (published before hashes were) is taken as it is."""
    recorded = published.get("content_sha256")
    if not recorded:
        return
    with storage.local_tree(uri) as local:
        content = artifact.served_files_sha256(local)
    if content != recorded:
        raise RegistryError(
            f"{uri}: damaged (its files' sha256 {content[:12]}, published {recorded[:12]}); {fix}"
        )


def verify(registry: str, model_name: str, version: str) -> None:
    """:func:`verify_folder` of a registry's version; the fix named is a promotion."""
    published = metadata(registry, model_name, version) or {}
    verify_folder(path(registry, model_name, version), published, repair(registry, model_name))


def _check_writable(registry: str, folder: str) -> None:
    for target in (registry, folder):
        if os.path.exists(target) and not os.path.isdir(target):
            raise RegistryError(f"{target}: a file, not a registry folder; pass another --registry")
    existing = next(p for p in (folder, *_parents(folder)) if os.path.exists(p))
    if not os.path.isdir(existing):
        raise RegistryError(
            f"{existing}: a file, where --registry {registry} needs a folder; pass another "
            "--registry"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RegistryError(
            f"{existing}: cannot create or write the registry here (permission denied); "
            "pass another --registry or give this user write access"
        )


def _parents(folder: str) -> list[str]:
    parents, current = [], os.path.abspath(folder)
    while os.path.dirname(current) != current:
        current = os.path.dirname(current)
        parents.append(current)
    return parents


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
            found = metadata(registry, model_name, name) or {}
            if found.get("content_sha256") == content_sha256:
                return found
    return None


def versions(registry: str, model_name: str, must_exist: bool = False) -> list[dict]:
    """Every published version's metadata, oldest first, each with ``production`` set.

    ``must_exist``: a registry that is not there is an InputError, not an empty list."""
    found, problem = listing(registry, model_name, must_exist)
    if problem:
        raise RegistryError(problem)
    return found


def listing(
    registry: str, model_name: str, must_exist: bool = False
) -> tuple[list[dict], str | None]:
    """The published versions (as :func:`versions`) and what is wrong with ``LATEST``, if
    anything, so a listing can show the versions and say why none is production."""
    if must_exist:
        storage.check_bucket(registry)
        if not storage.is_gcs(registry) and not os.path.isdir(registry):
            raise InputError(f"{registry}: no such registry folder")
    try:
        current, problem = production_version(registry, model_name), None
    except RegistryError as e:
        current, problem = None, str(e)
    found = []
    for name in storage.list_folders(path(registry, model_name)):
        published = metadata(registry, model_name, name)
        if published is not None:  # a version is published once its metadata is there
            found.append({**published, "production": name == current})
    for v in found:  # with LATEST broken, none is production
        if v["production"]:
            try:
                verify(registry, model_name, v["version"])
            except RegistryError as e:
                v["damaged"], problem = True, str(e)
    if current and not any(v["production"] for v in found):
        problem = (
            f"{model_name}/{LATEST} names version {current}, which is not "
            f"published; {repair(registry, model_name)}"
        )
    return found, problem


def promote_to(registry: str, model_name: str, version: str) -> str | None:
    """Makes a published version production, whatever ``LATEST`` holds now (a rollback, or
    the repair of a damaged ``LATEST``), by the same compare-and-swap as export; returns
    what ``LATEST`` held before."""
    published = metadata(registry, model_name, version)
    if published is None:
        raise InputError(
            f"{model_name}: no published version {version} (no {METADATA}); "
            f"`shapes-pipeline models --registry {registry}` lists them"
        )
    verify_folder(
        path(registry, model_name, version),
        published,
        "promote another version, or publish this model again (a run with the same data)",
    )
    latest = path(registry, model_name, LATEST)
    before = storage.read_text(latest)
    try:
        storage.replace_text(latest, f"{version}\n", expected=before)
    except storage.StorageConflict as e:
        raise PromotionConflict(f"{model_name}: LATEST changed meanwhile ({e}); try again") from e
    return before


def resolve(uri: str, model_name: str) -> str:
    """A version folder, or a registry's production version; either verified."""
    meta = storage.join(uri, METADATA)
    found = storage.read_text(meta)
    if found is not None:
        published = _metadata_of(meta, found)
        verify_folder(uri, published, "use another version, or publish this model again")
        return uri
    version = production_version(uri, model_name)
    if version is None:
        others = [n for n in storage.list_folders(uri) if n != model_name][:3]
        hint = f"; it holds {', '.join(others)} (--model-name)" if others else ""
        raise InputError(
            f"{uri}: neither a model version (no {METADATA}) nor a registry with a "
            f"production {model_name} (no {model_name}/{LATEST}){hint}"
        )
    if metadata(uri, model_name, version) is None:
        raise RegistryError(
            f"{model_name}/{LATEST} names version {version}, which is not published; "
            f"{repair(uri, model_name)}"
        )
    verify(uri, model_name, version)
    return path(uri, model_name, version)
