"""archive.py's refusals pinned where the broader tests leave room: a drive letter, headers
that claim nothing was compressed, macOS's resource forks, the path-length limit at its
byte, and the entry each refusal names (escaped, cut only past MAX_SHOWN characters)."""

import ast
import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shapes_pipeline.helpers import archive
from shapes_pipeline.helpers.dataset import DataError

OUTSIDE = "would be written outside the folder the archive is unpacked to"


def zipped(names: list[str], data: bytes = b"x") -> zipfile.ZipFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name in names:
            z.writestr(name, data)
    return zipfile.ZipFile(buffer)


def claiming(*sizes: tuple[int, int]) -> zipfile.ZipFile:
    """An archive whose headers claim these (inflated, compressed) sizes; check_entries
    reads only the headers, which another archiver (or an attacker) may fill as it likes."""
    found = zipped(["data/0.png"])
    method = found.infolist()[0].compress_type
    found.filelist = []
    for i, (inflated, compressed) in enumerate(sizes):
        info = zipfile.ZipInfo(f"data/{i}.png")
        info.compress_type = method
        info.file_size, info.compress_size = inflated, compressed
        found.filelist.append(info)
    return found


def refusal(found: zipfile.ZipFile, limits: archive.Limits) -> str:
    """What check_entries says refusing the archive; "" where it keeps every entry."""
    try:
        kept = archive.check_entries(found, "d.zip", limits)
    except DataError as error:
        return str(error)
    assert len(kept) == len(found.filelist)
    return ""


@pytest.mark.parametrize("name", ["c:/evil.png", "C:evil.png", "shapes:/a.png", "a:b/c.png"])
def test_a_drive_letter_or_colon_in_the_first_part_is_refused_as_outside(name):
    """Windows' unzip writes ``c:/x`` to the C: drive and ``C:x`` to C:'s current folder:
    refused as outside the folder, naming the entry and the archive, in full words."""
    with pytest.raises(DataError) as error:
        archive.check_entries(zipped([name]), "data.zip")
    assert str(error.value) == f"data.zip: entry {name!r} {OUTSIDE}"


def test_a_colon_after_the_first_part_is_just_a_character():
    """Only a leading part can be a drive; ``shapes/a:b.png`` is a file name (ext4 takes it)."""
    assert [i.filename for i in archive.check_entries(zipped(["shapes/a:b.png"]), "d.zip")] == [
        "shapes/a:b.png"
    ]


@given(ratio=st.integers(1, 50), over=st.integers(0, 3))
def test_an_entry_claiming_zero_compressed_bytes_counts_as_one(ratio, over):
    """A header saying 0 compressed bytes is held to the ratio as if it said 1: it may
    inflate to ``ratio`` bytes, not one more (2 would let a zero-byte claim through twice
    as far)."""
    limits = archive.Limits(ratio=ratio, ratio_from_bytes=0)
    size = ratio + over
    refused = refusal(claiming((size, 0)), limits)
    if over == 0:
        assert refused == ""
    else:
        assert f"inflates 0 bytes to {size} (more than {ratio}x): a zip bomb?" in refused


@given(ratio=st.integers(2, 50), over=st.integers(0, 3))
def test_an_archive_claiming_zero_compressed_bytes_in_all_counts_as_one(ratio, over):
    """The whole archive too: entries each too small to be checked alone, claiming 0
    compressed bytes in all, may inflate to ``ratio`` bytes together, not one more."""
    total = ratio + over
    halves = (total // 2, total - total // 2)
    limits = archive.Limits(ratio=ratio, ratio_from_bytes=max(halves))
    refused = refusal(claiming((halves[0], 0), (halves[1], 0)), limits)
    if over == 0:
        assert refused == ""
    else:
        assert f"inflate 0 bytes to {total} (more than {ratio}x as a whole)" in refused


def test_macos_resource_forks_are_not_unpacked(tmp_path):
    """``__MACOSX/...`` holds macOS's resource forks (``._a.png``, not images): skipped at
    any depth under it, so the data folder is the archive's one real top-level folder."""
    path = tmp_path / "mac.zip"
    names = ["shapes/a/1.png", "__MACOSX/shapes/a/._1.png", "__MACOSX/._shapes", "__MACOSX/"]
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            z.writestr(name, b"" if name.endswith("/") else b"x")
    kept = archive.check_entries(zipfile.ZipFile(path), "mac.zip")
    assert [i.filename for i in kept] == ["shapes/a/1.png"]
    found = archive.extract(path, tmp_path / "out", shown_as="mac.zip")
    assert found == tmp_path / "out" / "shapes"
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in found.parent.rglob("*")) == [
        "shapes",
        "shapes/a",
        "shapes/a/1.png",
    ]


def long_path(length: int) -> str:
    """A name of exactly ``length`` bytes whose every part is within 255 bytes."""
    parts, left = [], length
    while left > 0:
        part = min(200, left)
        parts.append("d" * part)
        left -= part + 1  # the slash after it
    name = "/".join(parts)
    return name + "x" * (length - len(name))


def test_a_path_of_max_path_bytes_is_taken_and_one_byte_more_refused():
    """MAX_PATH_BYTES (1024, macOS's PATH_MAX) is the longest whole name taken; the refusal
    names the entry, cut to fit one line, and says the limit."""
    at, over = long_path(archive.MAX_PATH_BYTES), long_path(archive.MAX_PATH_BYTES + 1)
    assert len(at.encode()) == archive.MAX_PATH_BYTES == len(over.encode()) - 1
    assert len(archive.check_entries(zipped([at]), "d.zip")) == 1
    with pytest.raises(DataError) as error:
        archive.check_entries(zipped([over]), "d.zip")
    message = str(error.value)
    assert message.startswith(f"d.zip: entry {archive._shown(over)} has a path longer than 1024")
    assert message.startswith("d.zip: entry 'dddddddddd") and f"({len(over)} bytes)" in message


def test_a_part_past_max_name_bytes_is_refused_naming_its_entry():
    name = "shapes/a/" + "é" * 128 + ".png"  # 256 bytes in one part
    with pytest.raises(DataError) as error:
        archive.check_entries(zipped([name]), "d.zip")
    message = str(error.value)
    assert message.startswith("d.zip: entry 'shapes/a/éééé") and "longer than 255 bytes" in message
    assert f"({len(name.encode())} bytes)" in message


@given(
    name=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=150)
)
def test_an_entry_is_named_escaped_and_whole_up_to_max_shown_characters(name):
    """repr keeps a name on one line; up to MAX_SHOWN characters it is shown whole, beyond
    that a head of the name (still escaped) and the name's size in bytes."""
    shown = archive._shown(name)
    if len(repr(name)) <= archive.MAX_SHOWN:
        assert shown == repr(name)
        return
    head, _, rest = shown.rpartition("... (")
    assert rest == f"{len(name.encode())} bytes)"
    text = ast.literal_eval(head)
    assert name.startswith(text) and len(text) >= 1 and len(head) <= archive.MAX_SHOWN - 30


def test_a_name_whose_repr_is_max_shown_characters_is_shown_whole():
    """The bound is inclusive: a repr of exactly MAX_SHOWN characters is whole, one more is cut."""
    at = "x" * (archive.MAX_SHOWN - 2)  # repr adds the two quotes
    assert archive._shown(at) == repr(at)
    over = at + "x"
    assert archive._shown(over) != repr(over) and archive._shown(over).endswith(
        f"... ({len(over)} bytes)"
    )


def test_a_refused_archive_writes_nothing(tmp_path):
    path = tmp_path / "in.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("shapes/a/1.png", b"x")
        z.writestr("c:/evil.png", b"x")
    with pytest.raises(DataError, match=OUTSIDE):
        archive.extract(path, tmp_path / "out", shown_as=str(path))
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["in.zip"]


def test_a_folder_entry_after_its_files_and_hidden_top_level_entries_are_taken(tmp_path):
    """Archivers list a folder before or after its files (a folder that exists is fine), a
    top-level hidden file (.DS_Store) does not hide the one data folder, and the target's
    missing parents are made."""
    path = tmp_path / "in.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("shapes/a/1.png", b"x")
        z.writestr("shapes/a/", b"")
        z.writestr("shapes/", b"")
        z.writestr(".DS_Store", b"x")
    out = tmp_path / "deep" / "er" / "out"
    assert archive.extract(path, out, shown_as="in.zip") == out / "shapes"
    assert (out / "shapes" / "a" / "1.png").read_bytes() == b"x"
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    assert archive.extract(empty, tmp_path / "new" / "out", shown_as="e.zip") == (
        tmp_path / "new" / "out"
    )


def test_a_damaged_entry_is_named(tmp_path):
    """Bytes that do not match their CRC: refused naming the archive and the entry."""
    path = tmp_path / "in.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("shapes/a/1.png", b"the image bytes")
    path.write_bytes(path.read_bytes().replace(b"the image bytes", b"the image bytez"))
    with pytest.raises(DataError) as error:
        archive.extract(path, tmp_path / "out", shown_as="in.zip")
    assert str(error.value).startswith("in.zip: entry 'shapes/a/1.png' is damaged (")
