"""Room, user and text rules of the chat contract (examples/chat/names.py)."""

from __future__ import annotations

import string
import unicodedata

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from examples.chat.names import (
    ROOM_MAX,
    TEXT_MAX,
    USER_MAX,
    InvalidInputError,
    check_limit,
    check_query,
    check_room,
    check_since,
    check_text,
    check_user,
)

ROOM_ALPHABET = string.ascii_letters + string.digits + "_-"


@given(st.text(alphabet=ROOM_ALPHABET, min_size=1, max_size=ROOM_MAX))
def test_room_names_of_allowed_characters_are_accepted(room: str) -> None:
    assert check_room(room) == room


@given(st.text(max_size=ROOM_MAX + 10))
def test_room_name_is_accepted_exactly_when_it_follows_the_rule(room: str) -> None:
    valid = 1 <= len(room) <= ROOM_MAX and all(char in ROOM_ALPHABET for char in room)
    if valid:
        assert check_room(room) == room
    else:
        with pytest.raises(InvalidInputError, match="room name"):
            check_room(room)


@pytest.mark.parametrize(
    "room",
    ["", "a" * (ROOM_MAX + 1), "has space", "dot.ted", "slash/", "ümlaut", "lobby\n", "٣"],
)
def test_bad_room_names_are_refused(room: str) -> None:
    with pytest.raises(InvalidInputError, match="room name"):
        check_room(room)


def test_longest_room_name_is_accepted() -> None:
    assert check_room("r" * ROOM_MAX) == "r" * ROOM_MAX


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("ann", "ann"), ("  ann  ", "ann"), ("Ann Lee", "Ann Lee"), ("\tZoë\n", "Zoë"), ("😀", "😀")],
)
def test_user_names_are_trimmed(raw: str, expected: str) -> None:
    assert check_user(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("u" * (USER_MAX + 1), "at most 32"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\x7fb", "control"),
        ("a\x9bb", "control"),
        ("a\ud800b", "surrogate"),
        ("\u200b", "U\\+200B ZERO WIDTH SPACE"),
        ("ann\u200b", "invisible"),
        ("a\u200cb", "invisible"),  # zero-width non-joiner
        ("a\u200db", "invisible"),  # zero-width joiner
        ("\ufeffann", "U\\+FEFF"),
        ("ann\u202e", "RIGHT-TO-LEFT OVERRIDE"),
        ("a\u2066b", "invisible"),  # left-to-right isolate
        ("a\u2028b", "line separator"),
        ("a\u2029b", "paragraph separator"),
        ("ann\U000e0001", "invisible"),  # language tag
        ("ann\U000e0041", "TAG LATIN CAPITAL LETTER A"),
        ("\ue000", "private-use"),
        ("ann\U000f0000", "private-use"),
        ("a\u0378b", "unassigned"),
        ("\u3164", "no visible character"),  # Hangul filler: a letter that shows nothing
        ("\u2800\u2800", "no visible character"),  # blank Braille pattern
        ("\u0301\u0301", "no visible character"),  # combining marks alone
        ("\u3000\u0301", "no visible character"),
    ],
)
def test_bad_user_names_are_refused(raw: str, why: str) -> None:
    with pytest.raises(InvalidInputError, match=why):
        check_user(raw)


def test_user_name_length_counts_after_trimming() -> None:
    assert check_user(" " + "u" * USER_MAX + " ") == "u" * USER_MAX


REFUSED_IN_NAMES = {"Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"}
BLANK = "\u115f\u1160\u3164\uffa0\u2800"  # letters and symbols that show nothing
VISIBLE_NAME_CHARS = st.characters(categories=["Lu", "Ll", "Lo", "Nd", "Po", "Sm", "So"]).filter(
    lambda char: char not in BLANK
)
INVISIBLE_OR_CONTROL = st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"])
# Unicode's White_Space property (not Python's str.isspace, which adds U+001C-U+001F)
UNICODE_WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(code) for code in range(0x2000, 0x200B))
)


def trimmed(text: str) -> str:
    """`text` without Unicode white space at either end (what the spec's trimming means)."""
    start, end = 0, len(text)
    while start < end and text[start] in UNICODE_WHITE_SPACE:
        start += 1
    while end > start and text[end - 1] in UNICODE_WHITE_SPACE:
        end -= 1
    return text[start:end]


def is_visible(char: str) -> bool:
    return unicodedata.category(char)[0] in "LNPS" and char not in BLANK


@given(st.text(max_size=USER_MAX + 8))
def test_user_name_rule_holds_for_any_text(raw: str) -> None:
    name = trimmed(raw)
    valid = (
        1 <= len(name) <= USER_MAX
        and not any(unicodedata.category(char) in REFUSED_IN_NAMES for char in name)
        and any(is_visible(char) for char in name)
    )
    if valid:
        assert check_user(raw) == name
    else:
        with pytest.raises(InvalidInputError):
            check_user(raw)


@given(
    before=st.text(VISIBLE_NAME_CHARS, min_size=1, max_size=10),
    bad=INVISIBLE_OR_CONTROL,
    after=st.text(VISIBLE_NAME_CHARS, max_size=10),
)
def test_one_invisible_or_control_character_anywhere_refuses_the_name(
    before: str, bad: str, after: str
) -> None:
    assert check_user(before + after) == before + after  # visible characters only: accepted
    # white space (tab, line separator...) at the end is trimmed, as the spec says; anything
    # else, and white space inside the name, is refused
    assume(after or bad not in UNICODE_WHITE_SPACE)
    with pytest.raises(InvalidInputError, match="user name"):
        check_user(before + bad + after)


def test_information_separators_at_the_end_are_refused_not_trimmed() -> None:
    # Python's str.strip() takes U+001C-U+001F for white space; they are control characters
    for bad in "\x1c\x1d\x1e\x1f":
        with pytest.raises(InvalidInputError, match="control"):
            check_user("ann" + bad)
    assert check_user("\tann\u3000") == "ann"


@given(
    name=st.text(VISIBLE_NAME_CHARS, min_size=1, max_size=USER_MAX),
    padding=st.text(st.sampled_from(" \t\n\u00a0\u3000"), max_size=4),
)
def test_visible_names_are_accepted_and_trimmed(name: str, padding: str) -> None:
    assert check_user(padding + name + padding) == name


@pytest.mark.parametrize(
    ("raw", "user"),
    [
        (b"user=ann", "ann"),
        (b"user=Zo%C3%AB&since=3", "Zo\u00eb"),
        (b"user=%EF%BF%BD", "\ufffd"),
        (b"", None),
    ],
)
def test_query_strings_in_utf8_are_read(raw: bytes, user: str | None) -> None:
    assert check_query(raw).get("user") == user


@pytest.mark.parametrize(
    "raw", [b"user=%FF", b"user=ann%C3", b"user=%ED%A0%80", b"user=\xff", b"since=%FE&user=ann"]
)
def test_query_strings_that_are_not_utf8_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInputError, match="not valid UTF-8"):
        check_query(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("hi", "hi"), ("  hi \n", "hi"), ("two\nlines", "two\nlines"), ("<script>", "<script>")],
)
def test_texts_are_trimmed(raw: str, expected: str) -> None:
    assert check_text(raw) == expected


def test_text_length_limits() -> None:
    assert check_text("x" * TEXT_MAX) == "x" * TEXT_MAX
    assert check_text(" " * 100 + "x" * TEXT_MAX + " " * 100) == "x" * TEXT_MAX
    with pytest.raises(InvalidInputError, match="at most 2000"):
        check_text("x" * (TEXT_MAX + 1))
    for blank in ("", " ", "\n\t  "):
        with pytest.raises(InvalidInputError, match="empty"):
            check_text(blank)


def test_text_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="Unicode"):
        check_text("a\udc80")


@given(st.text(max_size=TEXT_MAX + 20))
def test_text_rule_holds_for_any_text(raw: str) -> None:
    text = raw.strip()
    if 1 <= len(text) <= TEXT_MAX and "\x00" not in text:
        assert check_text(raw) == text
    else:
        with pytest.raises(InvalidInputError):
            check_text(raw)


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("0", 0), ("17", 17), ("007", 7)])
def test_since_is_absent_or_a_whole_number(raw: str | None, expected: int | None) -> None:
    assert check_since(raw) == expected


@pytest.mark.parametrize("raw", ["", "-1", "+1", " 1", "1.0", "1e3", "abc", "١٢", "1_000", "9" * 19])
def test_bad_since_is_refused(raw: str) -> None:
    with pytest.raises(InvalidInputError, match="since"):
        check_since(raw)


@pytest.mark.parametrize(("raw", "expected"), [(None, 50), ("1", 1), ("50", 50), ("500", 500)])
def test_limit_defaults_to_50_and_allows_up_to_500(raw: str | None, expected: int) -> None:
    assert check_limit(raw) == expected


@pytest.mark.parametrize("raw", ["0", "501", "-1", "", "ten", "5.0", "1e2", "9" * 30])
def test_bad_limit_is_refused_and_the_message_says_the_range(raw: str) -> None:
    with pytest.raises(InvalidInputError, match="from 1 to 500"):
        check_limit(raw)


@given(st.text(max_size=25))
def test_since_accepts_exactly_plain_digits(raw: str) -> None:
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        assert check_since(raw) == int(raw)
    else:
        with pytest.raises(InvalidInputError):
            check_since(raw)


def test_text_with_a_nul_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="NUL"):
        check_text("hello\x00world")
