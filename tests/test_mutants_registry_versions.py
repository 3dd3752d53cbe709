"""The registry's version functions one by one, on real folders (and the GCS emulator
where the code differs): promoting, finding a version by content, listing and resolving;
the exact one-line refusals (the file, the value and the repair a user types next), what
each returns, and what LATEST holds after. Names, LATEST and metadata as read, and
``check``, are in test_mutants_registry.py."""

from pathlib import Path

import pytest
from helpers import tree_bytes
from registry_files import MODEL, V1, V2, V3, latest, publish, repair

from shapes_pipeline.helpers import artifact, registry, storage
from shapes_pipeline.helpers.registry import PromotionConflict, RegistryError
from shapes_pipeline.helpers.step import InputError

# ---------------------------------------------------------------------- promote


@pytest.mark.parametrize("replaces", [None, V1])
def test_promote_swaps_latest_only_from_what_the_gate_saw(tmp_path, replaces):
    if replaces:
        latest(tmp_path, f"{replaces}\n")
    registry.promote(str(tmp_path), MODEL, V2, replaces=replaces)
    assert (tmp_path / MODEL / "LATEST").read_text() == f"{V2}\n"
    before = tree_bytes(tmp_path)
    with pytest.raises(PromotionConflict) as lost:
        registry.promote(str(tmp_path), MODEL, V3, replaces=replaces)
    uri = tmp_path / MODEL / "LATEST"
    held, wanted = repr(f"{V2}\n"), "no file" if replaces is None else repr(f"{replaces}\n")
    assert str(lost.value) == (
        f"{MODEL}: production changed since the gate compared against "
        f"{replaces or 'no production model'} ({uri}: holds {held}, expected {wanted}; not "
        f"replaced); {V3} is not production"
    )
    assert tree_bytes(tmp_path) == before


# ------------------------------------------------------------------- promote_to


def test_promote_to_makes_a_published_version_production_and_returns_what_was(tmp_path):
    publish(tmp_path, V1)
    publish(tmp_path, V2)
    assert registry.promote_to(str(tmp_path), MODEL, V1) is None
    assert registry.promote_to(str(tmp_path), MODEL, V2) == f"{V1}\n"
    latest(tmp_path, b"\xff garbage")  # a damaged LATEST is repaired too
    assert registry.promote_to(str(tmp_path), MODEL, V1) == "\udcff garbage"
    assert (tmp_path / MODEL / "LATEST").read_text() == f"{V1}\n"


def test_promote_to_refuses_an_unpublished_version_naming_it_and_the_listing(tmp_path):
    publish(tmp_path, V1)
    (tmp_path / MODEL / V2).mkdir()
    latest(tmp_path, f"{V1}\n")
    for version in (V2, V3):
        with pytest.raises(InputError) as refused:
            registry.promote_to(str(tmp_path), MODEL, version)
        assert str(refused.value) == (
            f"{MODEL}: no published version {version} (no metadata.json);"
            f" `shapes-pipeline models --registry {tmp_path}` lists them"
        )
    assert (tmp_path / MODEL / "LATEST").read_text() == f"{V1}\n"


def test_promote_to_loses_to_a_promotion_between_its_read_and_its_swap(tmp_path, monkeypatch):
    publish(tmp_path, V1)
    publish(tmp_path, V2)
    latest(tmp_path, f"{V1}\n")
    read = storage.read_text

    def then_another_promotion(uri):
        found = read(uri)
        Path(uri).write_text(f"{V3}\n")
        return found

    monkeypatch.setattr(storage, "read_text", then_another_promotion)
    with pytest.raises(PromotionConflict) as lost:
        registry.promote_to(str(tmp_path), MODEL, V2)
    uri = tmp_path / MODEL / "LATEST"
    held, wanted = repr(f"{V3}\n"), repr(f"{V1}\n")
    assert str(lost.value) == (
        f"{MODEL}: LATEST changed meanwhile ({uri}: holds {held}, expected {wanted}; not "
        "replaced); try again"
    )
    assert uri.read_text() == f"{V3}\n"


# ---------------------------------------------------------------- find_by_content


def test_find_by_content_reads_only_versions_named_by_that_hash_newest_first(tmp_path):
    content = "cccc3333" + "0" * 56
    publish(tmp_path, f"20260101T000000Z-{content[:8]}", content_sha256=content, n=1)
    newest = publish(tmp_path, f"20260105T000000Z-{content[:8]}", content_sha256=content, n=2)
    (tmp_path / MODEL / f"20260109T000000Z-{content[:8]}").mkdir()  # crashed: no metadata
    publish(tmp_path, "20260110T000000Z-ffffffff", content_sha256=content)  # misnamed
    assert registry.find_by_content(str(tmp_path), MODEL, content) == newest
    other = content[:8] + "1" * 56  # the same first 8 hex digits, other files
    assert registry.find_by_content(str(tmp_path), MODEL, other) is None
    assert registry.find_by_content(str(tmp_path), MODEL, "ffffffff" + "2" * 56) is None
    assert registry.find_by_content(str(tmp_path), "other", content) is None


# ---------------------------------------------------------------- versions, listing


def test_versions_lists_published_ones_oldest_first_marking_production(tmp_path):
    one, two = publish(tmp_path, V1, n=1), publish(tmp_path, V2, n=2)
    (tmp_path / MODEL / V3).mkdir()
    assert registry.versions(str(tmp_path), MODEL) == [
        {**one, "production": False},
        {**two, "production": False},
    ]
    latest(tmp_path, f"{V2}\n")
    assert registry.listing(str(tmp_path), MODEL) == (
        [{**one, "production": False}, {**two, "production": True}],
        None,
    )


def test_listing_shows_the_versions_and_says_why_none_is_production(tmp_path):
    one = publish(tmp_path, V1)
    (tmp_path / MODEL / V3).mkdir()
    for text, problem in (
        ("", f"{MODEL}/LATEST is empty; {repair(tmp_path)}"),
        (
            f"{V3}\n",
            f"{MODEL}/LATEST names version {V3}, which is not published; {repair(tmp_path)}",
        ),
    ):
        latest(tmp_path, text)
        assert registry.listing(str(tmp_path), MODEL) == ([{**one, "production": False}], problem)
        with pytest.raises(RegistryError) as refused:
            registry.versions(str(tmp_path), MODEL)
        assert str(refused.value) == problem


def test_a_registry_that_must_exist_and_does_not_is_refused(tmp_path, bucket):
    missing = str(tmp_path / "nowhere")
    assert registry.versions(missing, MODEL) == []
    assert registry.listing(missing, MODEL) == ([], None)
    with pytest.raises(InputError) as refused:
        registry.versions(missing, MODEL, must_exist=True)
    assert str(refused.value) == f"{missing}: no such registry folder"
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(InputError, match="no such registry folder"):
        registry.versions(str(tmp_path / "file"), MODEL, must_exist=True)
    assert registry.versions(str(tmp_path), MODEL, must_exist=True) == []
    assert registry.versions(f"gs://{bucket.name}/reg", MODEL, must_exist=True) == []
    gone = f"gs://{bucket.name}-missing/reg"  # named itself, not as the LATEST read first
    with pytest.raises(storage.StorageError) as refused:
        registry.versions(gone, MODEL, must_exist=True)
    assert str(refused.value) == f"{gone}: bucket '{bucket.name}-missing' does not exist"


# ------------------------------------------------------------------------ resolve


def test_resolve_takes_a_version_folder_or_a_registrys_production_version(tmp_path):
    publish(tmp_path, V1)
    publish(tmp_path, V2)
    latest(tmp_path, f"{V1}\n")
    folder = str(tmp_path / MODEL / V2)
    assert registry.resolve(folder, MODEL) == folder
    assert registry.resolve(str(tmp_path), MODEL) == str(tmp_path / MODEL / V1)


def test_resolve_names_what_is_missing(tmp_path):
    with pytest.raises(InputError) as refused:
        registry.resolve(str(tmp_path), MODEL)
    assert str(refused.value) == (
        f"{tmp_path}: neither a model version (no metadata.json) nor a registry with a "
        f"production {MODEL} (no {MODEL}/LATEST)"
    )
    (tmp_path / "flowers").mkdir()  # another model: named as the way out
    with pytest.raises(InputError) as refused:
        registry.resolve(str(tmp_path), MODEL)
    assert str(refused.value).endswith(f"(no {MODEL}/LATEST); it holds flowers (--model-name)")
    (tmp_path / MODEL / V3).mkdir(parents=True)
    latest(tmp_path, f"{V3}\n")
    with pytest.raises(RegistryError) as refused:
        registry.resolve(str(tmp_path), MODEL)
    assert str(refused.value) == (
        f"{MODEL}/LATEST names version {V3}, which is not published; {repair(tmp_path)}"
    )


# ------------------------------------------------------- a damaged published version


def published_with_hash(reg: Path, version: str) -> str:
    """A version whose metadata records its files' hash, as export writes it."""
    folder = reg / MODEL / version
    (folder / "saved_model").mkdir(parents=True)
    (folder / "saved_model" / "saved_model.pb").write_bytes(b"graph " + version.encode())
    (folder / "labels.txt").write_text("a\nb\n")
    content = artifact.served_files_sha256(folder)
    publish(reg, version, content_sha256=content)
    return content


def test_each_use_of_a_damaged_version_names_it_and_its_own_repair(tmp_path):
    recorded = published_with_hash(tmp_path, V1)
    published_with_hash(tmp_path, V2)
    latest(tmp_path, f"{V1}\n")
    (tmp_path / MODEL / V1 / "labels.txt").write_text("a\n")
    folder = tmp_path / MODEL / V1
    found = artifact.served_files_sha256(folder)
    damaged = f"{folder}: damaged (its files' sha256 {found[:12]}, published {recorded[:12]}); "
    for use in (registry.check, registry.resolve):
        with pytest.raises(RegistryError) as refused:
            use(str(tmp_path), MODEL)
        assert str(refused.value) == damaged + repair(tmp_path)
    with pytest.raises(RegistryError) as refused:
        registry.resolve(str(folder), MODEL)  # the version folder itself
    assert str(refused.value) == damaged + "use another version, or publish this model again"
    with pytest.raises(RegistryError) as refused:
        registry.promote_to(str(tmp_path), MODEL, V1)
    assert str(refused.value) == (
        damaged + "promote another version, or publish this model again (a run with the same data)"
    )
    listed, problem = registry.listing(str(tmp_path), MODEL)
    assert [v.get("damaged", False) for v in listed] == [True, False]
    assert problem == damaged + repair(tmp_path)
    registry.promote_to(str(tmp_path), MODEL, V2)  # the repair
    registry.check(str(tmp_path), MODEL)


def test_a_version_folder_with_broken_metadata_is_named(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    for text in ("{", "[]"):
        (folder / "metadata.json").write_text(text)
        with pytest.raises(RegistryError) as refused:
            registry.resolve(str(folder), MODEL)
        assert str(refused.value) == (
            f"{folder / 'metadata.json'}: not valid JSON metadata; restore it from a backup, "
            "or remove its version folder if it is not in production"
        )
