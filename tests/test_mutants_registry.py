"""The registry's functions one by one, on real folders (and the GCS emulator where the
code differs): the names it accepts, the exact one-line refusals (the file, the value
and the repair a user types next), what each returns, and what LATEST holds after."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, tree_bytes
from hypothesis import given
from hypothesis import strategies as st

from components import registry, storage
from components.registry import PromotionConflict, RegistryError
from components.step import InputError

MODEL = "shapes"
V1, V2, V3 = "20260101T000000Z-aaaa1111", "20260102T000000Z-bbbb2222", "20260103T000000Z-cccc3333"
NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", fullmatch=True)


def repair(reg) -> str:
    return (
        f"repair it with `shapes-pipeline promote --registry {reg} --model-name {MODEL} "
        "--version <a published version>` (see `shapes-pipeline models`), or remove LATEST "
        "if no version should be in production"
    )


def publish(reg: Path, version: str, **metadata) -> dict:
    """A published version: its folder with metadata.json."""
    folder = reg / MODEL / version
    folder.mkdir(parents=True, exist_ok=True)
    found = {"version": version, **metadata}
    (folder / "metadata.json").write_text(json.dumps(found))
    return found


def latest(reg: Path, text: str | bytes) -> None:
    (reg / MODEL).mkdir(parents=True, exist_ok=True)
    path = reg / MODEL / "LATEST"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)


# ---------------------------------------------------------------------------- names


@given(model=NAMES, version=NAMES)
def test_plain_names_become_path_segments(model, version):
    assert registry.path("gs://b/r", model, version) == f"gs://b/r/{model}/{version}"
    assert registry.path("reg", model) == os.path.join("reg", model)


BAD = st.one_of(
    st.sampled_from(["", ".", "..", "-x", "_x", ".hidden", "a/b", "a b", "x" * 101, "é"]),
    st.text(min_size=1, max_size=5).filter(lambda s: not registry.NAME.fullmatch(s)),
)


@given(bad=BAD, where=st.integers(0, 2))
def test_any_other_name_is_refused_wherever_it_is(bad, where):
    """The model name or any later segment: refused naming it and the rule."""
    names = [MODEL, V1, "metadata.json"]
    names[where] = bad
    with pytest.raises(InputError) as refused:
        registry.path("reg", *names)
    assert str(refused.value) == (
        f"name {bad!r}: use letters, digits, '.', '_' and '-' (at most 100, starting with a "
        "letter or digit)"
    )


def test_a_name_of_exactly_a_hundred_characters_is_accepted():
    assert registry.path("reg", MODEL, "v" * 100).endswith("/" + "v" * 100)


# ------------------------------------------------------------------------ LATEST


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"", "is empty"),
        (b" \n\t\n", "is empty"),
        (b"\xff\xfe", "is not text"),
        (b"v1\x00\n", "is not text"),
        (b"../x\n", "names '../x', which is not a version of this model's folder"),
    ],
)
def test_a_broken_latest_is_named_with_its_repair(tmp_path, raw, problem):
    latest(tmp_path, raw)
    with pytest.raises(RegistryError) as refused:
        registry.production_version(str(tmp_path), MODEL)
    assert str(refused.value) == f"{tmp_path / MODEL / 'LATEST'} {problem}; {repair(tmp_path)}"


@given(version=NAMES, before=st.sampled_from(["", " ", "\n"]), after=st.sampled_from(["", "\n"]))
def test_latest_names_its_version_whatever_the_whitespace_around(tmp_path_factory, version,
                                                                  before, after):  # fmt: skip
    reg = tmp_path_factory.mktemp("reg")
    assert registry.production_version(str(reg), MODEL) is None
    latest(reg, f"{before}{version}{after}")
    assert registry.production_version(str(reg), MODEL) == version


# ---------------------------------------------------------------------- metadata


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"a string"', "3", "null"])
def test_metadata_that_is_not_a_json_object_is_named_with_its_repair(tmp_path, text):
    (tmp_path / MODEL / V1).mkdir(parents=True)
    (tmp_path / MODEL / V1 / "metadata.json").write_text(text)
    with pytest.raises(RegistryError) as refused:
        registry.metadata(str(tmp_path), MODEL, V1)
    assert str(refused.value) == (
        f"{tmp_path / MODEL / V1 / 'metadata.json'}: not valid JSON metadata; restore it from "
        f"a backup, or remove the version folder {tmp_path / MODEL / V1} if it is not in "
        "production"
    )


def test_metadata_is_the_file_or_none_before_publishing(tmp_path):
    (tmp_path / MODEL / V2).mkdir(parents=True)
    assert registry.metadata(str(tmp_path), MODEL, V2) is None
    assert registry.metadata(str(tmp_path), MODEL, V1) is None
    found = publish(tmp_path, V1, metrics={"test_accuracy": 0.5})
    assert registry.metadata(str(tmp_path), MODEL, V1) == found


# ------------------------------------------------------------------------ check


def test_check_passes_a_registry_to_be_created_and_a_consistent_one(tmp_path, monkeypatch):
    registry.check(str(tmp_path / "a" / "b" / "reg"), MODEL)  # created on first write
    monkeypatch.chdir(tmp_path)
    registry.check("new/reg", MODEL)  # relative: created under the working folder
    publish(tmp_path / "reg", V1)
    (tmp_path / "reg" / MODEL / V2).mkdir()  # a crashed export's folder: harmless
    latest(tmp_path / "reg", f"{V1}\n")
    registry.check(str(tmp_path / "reg"), MODEL)
    registry.check(str(tmp_path / "reg"), "other")


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "unpublished"])
def test_check_refuses_latest_naming_no_published_version(tmp_path, exists):
    publish(tmp_path, V1)
    if exists:
        (tmp_path / MODEL / V2).mkdir()
    latest(tmp_path, f"{V2}\n")
    state = "is not published (no metadata.json)" if exists else "does not exist"
    with pytest.raises(RegistryError) as refused:
        registry.check(str(tmp_path), MODEL)
    assert str(refused.value) == (
        f"{tmp_path / MODEL / 'LATEST'} names version {V2}, which {state}; {repair(tmp_path)}"
    )


def test_check_refuses_unreadable_metadata_of_any_version(tmp_path):
    publish(tmp_path, V1)
    (tmp_path / MODEL / V2).mkdir()
    (tmp_path / MODEL / V2 / "metadata.json").write_text("{")
    with pytest.raises(RegistryError, match=f"{V2}/metadata.json: not valid JSON metadata"):
        registry.check(str(tmp_path), MODEL)


@pytest.mark.parametrize("which", ["registry", "model folder"])
def test_check_refuses_a_file_where_a_folder_goes(tmp_path, which):
    target = tmp_path / "reg" if which == "registry" else tmp_path / "reg" / MODEL
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("a file")
    with pytest.raises(RegistryError) as refused:
        registry.check(str(tmp_path / "reg"), MODEL)
    assert str(refused.value) == f"{target}: a file, not a registry folder; pass another --registry"


def test_check_of_a_gcs_registry_reads_it_without_local_checks(bucket, tmp_path, monkeypatch):
    """gs:// is no local path: no local folder is looked at (a file named like it is no
    obstacle), and LATEST is checked on the bucket."""
    monkeypatch.chdir(tmp_path)
    Path("gs:").write_text("a local file named like the scheme")
    reg = f"gs://{bucket.name}/reg"
    registry.check(reg, MODEL)
    bucket.blob(f"reg/{MODEL}/LATEST").upload_from_string(f"{V1}\n")
    with pytest.raises(RegistryError, match=f"names version {V1}, which does not exist"):
        registry.check(reg, MODEL)


CHECK_AS_USER = """
import json, os, sys
from components import registry
tmp = sys.argv[1]
out = {}
for mode in ("555", "333", "666", "777"):
    folder = os.path.join(tmp, mode)
    os.mkdir(folder)
    os.chmod(folder, int(mode, 8))
    for reg in (folder, os.path.join(folder, "deeper", "reg")):
        try:
            registry.check(reg, "shapes")
            out[reg] = None
        except registry.RegistryError as e:
            out[reg] = str(e)
locked = os.path.join(tmp, "777", "in-a-locked-model-folder")
os.makedirs(os.path.join(locked, "shapes"))
os.chmod(os.path.join(locked, "shapes"), 0o555)
try:
    registry.check(locked, "shapes")
    out[locked] = None
except registry.RegistryError as e:
    out[locked] = str(e)
print(json.dumps(out))
"""


def test_check_refuses_a_registry_this_user_cannot_write_naming_the_nearest_folder(tmp_path):
    """Writing needs write and search permission on the nearest existing folder (the
    model's folder, the registry, or the parent it will be created in); a user without
    them is refused there. As root, only without the capabilities that override file permissions."""
    registry.check(str(tmp_path), MODEL)  # in this process too, so mutmut runs this test
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*sys.path])}
    done = subprocess.run(
        [*(prefix if os.geteuid() == 0 else []), sys.executable, "-c", CHECK_AS_USER,
         str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    for mode in ("555", "333", "666", "777"):
        folder = str(tmp_path / mode)
        refusal = (
            f"{folder}: cannot create or write the registry here (permission denied); pass "
            "another --registry or give this user write access"
        )
        expected = None if mode in ("333", "777") else refusal
        assert found[folder] == expected, mode
        assert found[os.path.join(folder, "deeper", "reg")] == expected, mode
    locked = tmp_path / "777" / "in-a-locked-model-folder"  # the registry is writable
    assert found[str(locked)].startswith(f"{locked / MODEL}: cannot create or write")


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
            f"{tmp_path / MODEL / version}: no published version {version} (no metadata.json);"
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
        ("", f"{tmp_path / MODEL / 'LATEST'} is empty; {repair(tmp_path)}"),
        (
            f"{V3}\n",
            f"{tmp_path / MODEL / 'LATEST'} names version {V3}, which is not published; "
            f"{repair(tmp_path)}",
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
    (tmp_path / MODEL / V3).mkdir(parents=True)
    latest(tmp_path, f"{V3}\n")
    with pytest.raises(RegistryError) as refused:
        registry.resolve(str(tmp_path), MODEL)
    assert str(refused.value) == (
        f"{tmp_path / MODEL / 'LATEST'} names version {V3}, which is not published; "
        f"{repair(tmp_path)}"
    )
