"""The model registry's layout: ``<registry>/<model_name>/<version>/`` folders, and a
``LATEST`` file naming the production version, which only a passing gate moves."""

from __future__ import annotations

from components import storage

LATEST = "LATEST"


def production(registry: str, model_name: str) -> str | None:
    """The production version's URI, or None before the first export."""
    version = storage.read_text(storage.join(registry, model_name, LATEST))
    return storage.join(registry, model_name, version.strip()) if version else None


def promote(registry: str, model_name: str, version: str) -> None:
    storage.write_text(storage.join(registry, model_name, LATEST), f"{version}\n")
