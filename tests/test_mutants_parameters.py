"""parameters.py's rules pinned value by value: how a value is shown in a one-line error
(escaped when it holds a line or control character, cut when long, a huge integer
summarised), what ``typed`` takes and what it says, and each of ``check``'s refusals
naming its option, the value and what is allowed."""

import datetime
import math
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from components.parameters import shown

LIMIT = 60  # shown's default width


def breaks_a_line(c: str) -> bool:
    """Control characters (C0, DEL, C1) and the line and paragraph separators: what a log
    reader or str.splitlines may take as a line end or a terminal as a command."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp")


def expected_text(text: str, limit: int = LIMIT) -> str:
    escaped = repr(text) if any(breaks_a_line(c) for c in text) else text
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


@given(
    text=st.text(
        st.characters(exclude_categories=["Cs"]), max_size=80
    ),  # every code point, controls included
    limit=st.integers(10, 100),
)
@example(text=" \xa0printable spaces", limit=LIMIT)  # the space and NBSP are not controls
@example(text="\x1f", limit=LIMIT)  # the last C0 control
@example(text="\x7f", limit=LIMIT)  # DEL
@example(text="\x80", limit=LIMIT)  # the first C1 control
@example(text="\x9f", limit=LIMIT)  # the last C1 control
@example(text="\xa0\xa1", limit=LIMIT)  # the first characters after C1: shown as they are
@example(text="a\u2028b\u2029", limit=LIMIT)
@example(text="x" * LIMIT, limit=LIMIT)  # exactly the width: not cut
@example(text="x" * (LIMIT + 1), limit=LIMIT)  # one past it: cut to the width
def test_text_is_shown_as_given_unless_it_breaks_a_line_and_never_wider_than_the_limit(text, limit):
    """A value that could break the one error line is shown escaped (repr); any other
    exactly as given; either way cut to ``limit`` characters, ending in '...' when cut."""
    assert shown(text, limit) == expected_text(text, limit)
    assert len(shown(text, limit)) <= limit


@given(value=st.integers(-(10**LIMIT), 10**LIMIT))
@example(value=10**LIMIT)
@example(value=-(10**LIMIT))
def test_an_integer_up_to_ten_to_the_limit_is_shown_by_its_digits(value):
    """Up to 10**limit (inclusive) an integer is its decimal digits, cut like text."""
    assert shown(value) == expected_text(str(value))


@given(value=st.integers(10**LIMIT + 1, 10**400), negative=st.booleans())
@example(value=10**LIMIT + 1, negative=False)
@example(value=10**LIMIT + 1, negative=True)
@example(value=16**100, negative=False)  # 101 hex digits
def test_an_integer_past_ten_to_the_limit_is_shown_by_its_size_and_sign(value, negative):
    """Beyond 10**limit, printing it would cost time and say nothing (YAML reads 10**4000
    as an int): it is shown as its count of hex digits, with its sign."""
    number = -value if negative else value
    digits = len(format(value, "x"))
    sign = "-" if negative else ""
    assert shown(number) == f"{sign}<an integer of {digits} hex digits>"


@pytest.mark.parametrize(
    "value",
    [None, [7], {"a": 7}, ("x",), datetime.date(2020, 1, 1), b"\n"],
    ids=["null", "list", "map", "tuple", "yaml-date", "bytes"],
)
def test_a_value_that_is_not_text_or_a_number_is_shown_as_its_repr(value):
    """A YAML date, list or map in a config file is shown as Python writes it, so the user
    sees it was read as a date or a list, not as the text they typed."""
    assert shown(value) == expected_text(repr(value))


def test_a_float_is_shown_by_its_digits():
    for value in (2.5, -0.0, math.inf, math.nan, 1e-300):
        assert shown(value) == str(value)
