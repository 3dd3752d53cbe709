"""Properties of zip input and of the data folder's name rules, for generated archives and
names: an archive is either unpacked exactly inside its folder or refused in one short line
naming it, with nothing written; each ``Limits`` field holds at its value and trips past it."""

import os
import tempfile
import unicodedata
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from shapes_pipeline.helpers import archive
from shapes_pipeline.helpers.dataset import IMAGE_SUFFIXES, DataError
from shapes_pipeline.steps.split import checked_entries, is_image_file

SHOWN = "gs://bucket/raw/data.zip"
MAX_LINE = 300

COMPONENTS = st.one_of(
    st.sampled_from(["shapes", "circles", "a", "A", "b.png", "B.PNG", "日本.png", "x y"]),
    st.sampled_from(
        [
            "..",
            ".",
            "",
            "__MACOSX",
            "c:",
            "x\\y",
            "a\nb",
            "\x01",
            "\u202e",
            "é" * 127,
            "é" * 128,
            "x" * 255,
            "x" * 256,
            "d" * 250,
        ]
    ),  # fmt: skip
    st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=8
    ),
    st.sampled_from(["..", "."]),
)
BUILT = st.builds(
    lambda lead, parts, trail: lead + "/".join(parts) + trail,
    st.sampled_from(["", "", "", "/", "./"]),
    st.lists(COMPONENTS, min_size=1, max_size=4),
    st.sampled_from(["", "", "/"]),
)
NAMES = st.one_of(
    *[BUILT] * 6,
    st.just("/".join(["d" * 250] * 17)),  # each part fine, the whole past any PATH_MAX
).filter(bool)
RELATED = [  # another entry's name, changed: what makes twins, duplicates and clashes
    lambda n: n,
    lambda n: n + "/",
    lambda n: n.rstrip("/") + "/b.png",
    lambda n: n.rstrip("/").rpartition("/")[0],
    lambda n: n.replace("/", "/./", 1),
    lambda n: n.swapcase(),
]


@st.composite
def entries(draw) -> list[tuple[str, bytes]]:
    """Up to six entries; some named after earlier ones."""
    found = []
    for _ in range(draw(st.integers(0, 6))):
        if found and draw(st.integers(0, 2)) == 0:
            name = draw(st.sampled_from(RELATED))(draw(st.sampled_from(found))[0])
        else:
            name = draw(NAMES)
        if name:
            found.append((name, draw(st.binary(max_size=40))))
    return found


def _zip(path: Path, entries: list[tuple[str, bytes]]) -> None:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        warnings.simplefilter("ignore")  # "Duplicate name": duplicates are generated on purpose
        for name, data in entries:
            z.writestr(zipfile.ZipInfo(name), data)


def _refusals(names: list[str]) -> set[str]:
    """Why an archive of entries ``names`` must be refused (default limits, small entries),
    stated from the archive module's promises, not its code; empty when it is fine."""
    reasons, files, folders = set(), set(), set()
    for name in names:
        path = PurePosixPath(name)
        if name.startswith("/") or "\\" in name or ".." in path.parts:
            reasons.add("would be written outside the folder")
        if path.parts and ":" in path.parts[0]:  # a drive letter, to Windows' unzip
            reasons.add("would be written outside the folder")
        if any(len(part.encode()) > archive.MAX_NAME_BYTES for part in path.parts):
            reasons.add(f"longer than {archive.MAX_NAME_BYTES} bytes")
        if len(name.encode()) > archive.MAX_PATH_BYTES:
            reasons.add(f"a path longer than {archive.MAX_PATH_BYTES} bytes")
        if not path.parts and not name.endswith("/"):
            reasons.add("has no file name")
        folders |= {str(p) for p in path.parents} - {"."}
        (folders if name.endswith("/") else files).add(str(path))
    if files & folders:
        reasons.add("is both a file and a folder")
    return reasons


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes()
        for p in root.rglob("*")
    }


def _assert_refused_in_one_line(error: DataError, sandbox: Path, before: dict) -> str:
    message = str(error)
    assert message.startswith(f"{SHOWN}: ") and "\n" not in message, message
    assert len(message) <= MAX_LINE, message
    assert _tree(sandbox) == before  # nothing written, the target folder not even made
    return message


@given(entries=entries())
@example(entries=[("shapes/../../evil.png", b"x")])
@example(entries=[("shapes/a", b"x"), ("shapes/a/", b"")])
@example(entries=[("shapes/a/./b.png", b"x"), ("shapes/a/b.png/c.png", b"y")])
@example(entries=[])
@example(entries=[(".", b"x")])
def test_an_archive_is_unpacked_exactly_inside_its_folder_or_refused_in_one_line(entries):
    """Generated entry names (``..``, absolute, backslashes, drive letters, control
    characters, unicode, 255/256-byte parts, a path past PATH_MAX, empty parts, ``.``,
    case twins, duplicates, names both a file and a folder): the archive is refused exactly
    when its names break a rule, in one line of at most 300 characters naming the archive,
    with nothing written; otherwise every file is unpacked under the target, with its
    entry's bytes (the last entry of a name wins), and nothing else is written."""
    names = [name for name, _ in entries]
    expected = _refusals(names)
    event(f"refused: {sorted(expected)}" if expected else "unpacked")
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        _zip(sandbox / "in.zip", entries)
        before = _tree(sandbox)
        target = sandbox / "out"
        try:
            found = archive.extract(sandbox / "in.zip", target, shown_as=SHOWN)
        except DataError as error:
            message = _assert_refused_in_one_line(error, sandbox, before)
            assert any(reason in message for reason in expected), (message, expected)
            return
        assert not expected, f"accepted, but {expected}: {names}"
        assert found == target or found.parent == target
        inside = target.resolve()
        for path in target.rglob("*"):
            assert not path.is_symlink() and path.resolve().is_relative_to(inside)
        wanted = {}
        for name, data in entries:
            parts = PurePosixPath(name).parts
            if not name.endswith("/") and parts[:1] != (archive.SKIPPED,):
                wanted[PurePosixPath(*parts).as_posix()] = data
        written = {k: v for k, v in _tree(target).items() if v is not None}
        assert written == wanted
        assert set(_tree(sandbox)) == set(before) | {f"out/{p}" for p in _tree(target)} | {"out"}


@settings(max_examples=30)
@given(
    name=st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b),
    data=st.binary(max_size=20),
)
def test_raw_entry_names_are_read_as_zip_defines_them(name, data):
    """Names that are not UTF-8 or hold NUL, written as raw bytes (no UTF-8 flag): zip reads
    them as code page 437, and Python's zipfile ends a name at NUL. Either way the entry is
    unpacked inside the folder under that name, or refused in one line."""
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        _zip(sandbox / "in.zip", [("shapes/" + "Q" * len(name), data)])
        with zipfile.ZipFile(sandbox / "in.zip") as z:
            central = z.start_dir
        raw = bytearray((sandbox / "in.zip").read_bytes())
        for at in (30 + 7, central + 46 + 7):  # the name in the local and the central header
            assert raw[at : at + len(name)] == b"Q" * len(name)
            raw[at : at + len(name)] = name
        (sandbox / "in.zip").write_bytes(bytes(raw))
        read_as = ("shapes/" + name.decode("cp437")).split("\x00")[0]
        expected = _refusals([read_as])
        before = _tree(sandbox)
        try:
            archive.extract(sandbox / "in.zip", sandbox / "out", shown_as=SHOWN)
        except DataError as error:
            message = _assert_refused_in_one_line(error, sandbox, before)
            assert any(reason in message for reason in expected), (message, expected)
            return
        assert not expected, f"accepted, but {expected}: {read_as!r}"
        written = {k: v for k, v in _tree(sandbox / "out").items() if v is not None}
        as_file = {PurePosixPath(read_as).as_posix(): data}
        assert written == ({} if read_as.endswith("/") else as_file)


# Limits: each one holds at its value and trips one past it ------------------------------------


@st.composite
def archives(draw) -> list[tuple[bytes, int]]:
    """(data, compression) of each entry: runs of one byte (inflate well) or random bytes."""
    count = draw(st.integers(1, 6))
    entries = []
    for _ in range(count):
        size = draw(st.integers(0, 5000))
        data = (
            bytes([draw(st.integers(0, 255))]) * size
            if draw(st.booleans())
            else draw(st.binary(min_size=size, max_size=size))
        )
        entries.append((data, draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))))
    return entries


def _extract(path: Path, limits: archive.Limits) -> str | None:
    """None when unpacked, else the one-line refusal (checked: nothing written)."""
    target = path.parent / "out"
    try:
        archive.extract(path, target, shown_as=SHOWN, limits=limits)
    except DataError as error:
        message = str(error)
        assert message.startswith(f"{SHOWN}: ") and "\n" not in message
        assert len(message) <= MAX_LINE and not target.exists()
        return message
    for p in sorted(target.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    target.rmdir()
    return None


@settings(max_examples=40)
@given(entries=archives())
def test_each_limit_holds_at_its_value_and_trips_one_past_it(entries):
    """For the archive's own entry count, inflated total, largest inflation ratio (of an
    entry, and of the whole when no entry is large enough to be checked alone) and largest
    checked size: limits equal to them unpack it; one less refuses it, naming the limit.
    (``ratio=0`` checks every entry larger than ``ratio_from_bytes``.)"""
    loose = archive.Limits(entries=10**6, total_bytes=2**40, ratio=10**9, ratio_from_bytes=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "in.zip")
        with zipfile.ZipFile(path, "w") as z:
            for i, (data, method) in enumerate(entries):
                z.writestr(f"shapes/a/{i}.png", data, compress_type=method)
        infos = zipfile.ZipFile(path).infolist()
        count, total = len(infos), sum(i.file_size for i in infos)
        packed = sum(i.compress_size for i in infos)
        ratio = max(
            [-(-i.file_size // max(i.compress_size, 1)) for i in infos]
            + [-(-total // max(packed, 1))]
        )  # the smallest whole ratio every entry and the whole archive are within
        assert _extract(path, loose) is None
        assert _extract(path, archive.Limits(**{**vars(loose), "entries": count})) is None
        refused = _extract(path, archive.Limits(**{**vars(loose), "entries": count - 1}))
        assert refused and f"{count} entries, more than {count - 1}" in refused
        assert _extract(path, archive.Limits(**{**vars(loose), "total_bytes": total})) is None
        if total:
            refused = _extract(path, archive.Limits(**{**vars(loose), "total_bytes": total - 1}))
            assert refused and f"inflates to more than {total - 1} bytes" in refused
        assert _extract(path, archive.Limits(**{**vars(loose), "ratio": ratio})) is None
        if ratio:
            refused = _extract(path, archive.Limits(**{**vars(loose), "ratio": ratio - 1}))
            assert refused and f"(more than {ratio - 1}x" in refused and "zip bomb?" in refused
        largest = max(i.file_size for i in infos)  # no entry checked alone: the whole is
        whole = {**vars(loose), "ratio_from_bytes": largest, "ratio": -(-total // max(packed, 1))}
        assert _extract(path, archive.Limits(**whole)) is None
        if total > largest and whole["ratio"]:
            refused = _extract(path, archive.Limits(**{**whole, "ratio": whole["ratio"] - 1}))
            assert refused and f"(more than {whole['ratio'] - 1}x as a whole)" in refused
        sized = {**vars(loose), "ratio": 0}
        assert _extract(path, archive.Limits(**{**sized, "ratio_from_bytes": total})) is None
        if total:
            refused = _extract(path, archive.Limits(**{**sized, "ratio_from_bytes": total - 1}))
            assert refused and "(more than 0x" in refused


# Names in a data folder ------------------------------------------------------------------------

PRINTABLE = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No"} | {
    "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So",
}  # fmt: skip
FILE_NAMES = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="/\x00"), min_size=1, max_size=20
).filter(lambda n: n not in (".", "..") and len(n.encode()) <= 255)


def _shown_fine(name: str) -> bool:
    """Letters, marks, numbers, punctuation, symbols and the space: what a log line and a
    later step take as it is."""
    return all(c == " " or unicodedata.category(c) in PRINTABLE for c in name)


@settings(max_examples=40)
@given(names=st.lists(FILE_NAMES, min_size=1, max_size=5, unique=True), raw=st.booleans())
def test_data_folder_names_that_are_not_plain_text_are_refused_in_one_line(names, raw):
    """A data folder's entries are returned as they are when every name is plain text;
    otherwise (control characters, line separators, format characters, names that are not
    UTF-8) the folder is refused in one line that names it and shows the name escaped."""
    if raw:  # one name as bytes that are not UTF-8, as another system may write them
        names = [
            *names[:-1],
            os.fsdecode(names[-1].encode()[:200] + b"\xff"),
        ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp, "data")
        (root / "circles").mkdir(parents=True)
        for name in names:
            try:
                (root / "circles" / name).write_bytes(b"x")
            except (OSError, UnicodeEncodeError):  # a name this filesystem will not take
                return
        listed = {p.name for p in (root / "circles").iterdir()}
        if all(_shown_fine(n) for n in listed):
            found = checked_entries(root / "circles", root, "gs://b/data")
            assert {p.name for p in found} == listed
            return
        with pytest.raises(DataError) as error:
            checked_entries(root / "circles", root, "gs://b/data")
        message = str(error.value)
        assert message.startswith("gs://b/data/circles: holds ") and "\n" not in message
        assert any(repr(n) in message for n in listed if not _shown_fine(n))


@given(
    stem=st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="/\x00."),
        min_size=1,
        max_size=10,
    ),
    suffix=st.sampled_from(sorted(IMAGE_SUFFIXES) + [".txt", ".png.txt", "", ".pn", ".tiff"]),
    case=st.sampled_from([str.lower, str.upper, lambda s: s[:2].upper() + s[2:], str.title]),
    hidden=st.booleans(),
    folder=st.booleans(),
)
def test_an_image_file_is_a_visible_file_with_an_image_suffix_in_any_case(
    stem, suffix, case, hidden, folder
):
    """Whatever the case of its suffix: ``x.PNG`` is an image as ``x.png`` is; a hidden
    file, a folder named like an image, or another suffix is not."""
    name = ("." if hidden else "") + stem + case(suffix)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, name)
        try:
            path.mkdir() if folder else path.write_bytes(b"x")
        except OSError:
            return
        expected = not hidden and not folder and suffix in IMAGE_SUFFIXES
        assert is_image_file(path) is expected
