"""The registry's functions one by one, on real folders (and the GCS emulator where the
code differs): the names it accepts, LATEST and metadata as read, and ``check``: the exact
one-line refusals (the file, the value and the repair a user types next) and what each
returns. Promoting, finding, listing and resolving versions are in
test_mutants_registry_versions.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO
from hypothesis import given
from hypothesis import strategies as st
from registry_files import MODEL, V1, V2, latest, publish, repair

from shapes_pipeline.helpers import registry
from shapes_pipeline.helpers.registry import RegistryError
from shapes_pipeline.helpers.step import InputError

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", fullmatch=True)


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
    assert str(refused.value) == f"{MODEL}/LATEST {problem}; {repair(tmp_path)}"


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
        "a backup, or remove its version folder if it is not in production"
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
        f"{MODEL}/LATEST names version {V2}, which {state}; {repair(tmp_path)}"
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


@pytest.mark.parametrize("depth", [1, 3])
def test_a_registry_under_a_file_is_named_as_such_not_as_permissions(tmp_path, depth):
    """``afile/reg`` (or deeper): the file on the way is named, not a permission problem."""
    (tmp_path / "afile").write_text("a file")
    registry_uri = tmp_path / "afile" / Path(*["reg"] * depth)
    with pytest.raises(RegistryError) as refused:
        registry.check(str(registry_uri), MODEL)
    assert str(refused.value) == (
        f"{tmp_path / 'afile'}: a file, where --registry {registry_uri} needs a folder; pass "
        "another --registry"
    )


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
from shapes_pipeline.helpers import registry
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
