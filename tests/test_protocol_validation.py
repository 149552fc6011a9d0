"""Unit tests of protocol.validation and protocol.errors (docs/protocol.md sections 4 and 8)."""

from __future__ import annotations

import sys

import pytest

from zmq_chat.protocol import PROTOCOL_VERSION
from zmq_chat.protocol.errors import ErrorCode, ProtocolError, UsageError
from zmq_chat.protocol.validation import (
    DEFAULT_MAX_MESSAGE_CHARS,
    DEFAULT_MIN_PASSWORD_CHARS,
    MAX_PASSWORD_BYTES,
    RESERVED_USERNAMES,
    is_valid_username,
    validate_password,
    validate_text,
    validate_username,
)

# The white space set written out in docs/protocol.md section 4.3.
DOC_WHITESPACE = (
    [chr(c) for c in range(0x09, 0x0E)]
    + [chr(c) for c in range(0x1C, 0x20)]
    + ["\x20", "\x85", "\xa0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)]
    + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
)


# -- constants --------------------------------------------------------------------------------------


def test_defaults_match_the_spec():
    assert DEFAULT_MIN_PASSWORD_CHARS == 8
    assert MAX_PASSWORD_BYTES == 1024
    assert DEFAULT_MAX_MESSAGE_CHARS == 1000
    assert PROTOCOL_VERSION == 1
    assert RESERVED_USERNAMES == frozenset({"all"})


# -- usernames -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["abc", "bob", "Bob", "BOB", "123", "a1b2c3", "a" * 32, "Z" * 32, "9" * 3, "allx", "xall", "all1", "alla", "Al1"],
)
def test_valid_usernames(name):
    assert validate_username(name) is None
    assert is_valid_username(name) is True


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a",
        "ab",
        "a" * 33,
        "bo b",
        " bob",
        "bob ",
        "bob\n",
        "bob!",
        "bob_",
        "bob-x",
        "bob.x",
        "böb",  # non-ASCII letter
        "ＢＯＢ",  # full-width letters
        "bob٣",  # Arabic-Indic digit
        "bo\x00b",
    ],
)
def test_usernames_breaking_the_rule(name):
    with pytest.raises(ProtocolError) as info:
        validate_username(name)
    assert info.value.code is ErrorCode.BAD_USERNAME
    assert info.value.req is None
    assert is_valid_username(name) is False


@pytest.mark.parametrize("name", ["all", "ALL", "All", "aLl", "alL"])
def test_all_is_reserved_in_any_case(name):
    with pytest.raises(ProtocolError) as info:
        validate_username(name)
    assert info.value.code is ErrorCode.BAD_USERNAME
    assert "reserved" in info.value.message
    assert not is_valid_username(name)


@pytest.mark.parametrize("value", [None, 123, b"bob", ["bob"]])
def test_non_string_usernames_are_rejected(value):
    with pytest.raises(ProtocolError) as info:
        validate_username(value)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.BAD_USERNAME
    assert is_valid_username(value) is False  # type: ignore[arg-type]


# -- passwords -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "12345678",  # exactly the default minimum
        "correct horse battery staple",  # spaces allowed
        "éééééééé",  # 8 characters, 16 bytes: counted in characters
        "a" * MAX_PASSWORD_BYTES,  # exactly 1024 bytes
        "é" * 512,  # 1024 bytes of 2-byte characters
        "😀" * 256,  # 1024 bytes of 4-byte characters
        "€" * 341 + "a",  # 1023 + 1 bytes
    ],
)
def test_valid_passwords(password):
    assert validate_password(password) is None


@pytest.mark.parametrize(
    "password, why",
    [
        ("", "at least"),
        ("1234567", "at least"),  # 7 characters
        ("😀" * 7, "at least"),  # 28 bytes but only 7 characters
        ("a" * (MAX_PASSWORD_BYTES + 1), "at most"),
        ("é" * 513, "at most"),  # 1026 bytes, 513 characters
        ("😀" * 257, "at most"),  # 1028 bytes
        ("€" * 342, "at most"),  # 1026 bytes
    ],
)
def test_invalid_passwords(password, why):
    with pytest.raises(ProtocolError) as info:
        validate_password(password)
    assert info.value.code is ErrorCode.BAD_PASSWORD
    assert why in info.value.message


@pytest.mark.parametrize("min_chars, password, ok", [(1, "x", True), (12, "x" * 11, False), (12, "x" * 12, True), (0, "", True)])
def test_password_minimum_is_configurable(min_chars, password, ok):
    if ok:
        assert validate_password(password, min_chars) is None
    else:
        with pytest.raises(ProtocolError) as info:
            validate_password(password, min_chars)
        assert info.value.code is ErrorCode.BAD_PASSWORD
        assert str(min_chars) in info.value.message


# -- message text --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "x",
        " x ",
        "hello   world",
        "x" * DEFAULT_MAX_MESSAGE_CHARS,
        "😀" * DEFAULT_MAX_MESSAGE_CHARS,  # astral characters count 1 each
        "e\u0301" * 500,  # 1000 code points (combining marks count)
        "\u200b",  # zero-width space is not white space
        "line1\nline2",
    ],
)
def test_valid_texts(text):
    assert validate_text(text) is None


@pytest.mark.parametrize("text", ["", " ", "   ", "\t\n", "\u3000\u00a0"] + DOC_WHITESPACE)
def test_empty_or_white_space_texts(text):
    with pytest.raises(ProtocolError) as info:
        validate_text(text)
    assert info.value.code is ErrorCode.MESSAGE_EMPTY


def test_doc_white_space_set_is_exactly_str_isspace():
    assert {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()} == set(DOC_WHITESPACE)


@pytest.mark.parametrize(
    "text",
    ["x" * (DEFAULT_MAX_MESSAGE_CHARS + 1), "😀" * (DEFAULT_MAX_MESSAGE_CHARS + 1), "e\u0301" * 501, " " + "x" * 1000],
)
def test_too_long_texts(text):
    with pytest.raises(ProtocolError) as info:
        validate_text(text)
    assert info.value.code is ErrorCode.MESSAGE_TOO_LONG
    assert f"got {len(text)}" in info.value.message


def test_empty_wins_over_too_long():
    with pytest.raises(ProtocolError) as info:
        validate_text(" " * 5000)
    assert info.value.code is ErrorCode.MESSAGE_EMPTY


@pytest.mark.parametrize("max_chars, text, code", [(5, "x" * 5, None), (5, "x" * 6, ErrorCode.MESSAGE_TOO_LONG), (1, "x", None),
                                                   (1, "xy", ErrorCode.MESSAGE_TOO_LONG), (5000, "x" * 5000, None)])
def test_text_maximum_is_configurable(max_chars, text, code):
    if code is None:
        assert validate_text(text, max_chars) is None
    else:
        with pytest.raises(ProtocolError) as info:
            validate_text(text, max_chars)
        assert info.value.code is code
        assert str(max_chars) in info.value.message


# -- error codes and exceptions ------------------------------------------------------------------------

SPEC_CODES = {
    "E_FRAMES", "E_UNKNOWN_TYPE", "E_BAD_JSON", "E_BAD_FIELD", "E_VERSION", "E_NOT_LOGGED_IN",
    "E_ALREADY_LOGGED_IN", "E_BAD_USERNAME", "E_BAD_PASSWORD", "E_USER_EXISTS", "E_UNKNOWN_USER",
    "E_BAD_CREDENTIALS", "E_BLOCKED", "E_SERVER_FULL", "E_OVERLOADED", "E_MESSAGE_EMPTY",
    "E_MESSAGE_TOO_LONG", "E_DUPLICATE_ID", "E_SHUTTING_DOWN", "E_INTERNAL", "E_RATE_LIMITED",
    "E_MAILBOX_FULL",
}  # fmt: skip


def test_error_code_values_are_the_specified_strings():
    assert {code.value for code in ErrorCode} == SPEC_CODES


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_code_value_is_e_plus_name(code):
    assert code.value == "E_" + code.name
    assert code == code.value  # str enum compares equal to its wire string
    assert ErrorCode(code.value) is code


@pytest.mark.parametrize("req", [None, 0, 7, 2**53])
def test_protocol_error_attributes(req):
    exc = ProtocolError(ErrorCode.BAD_FIELD, "a field is wrong", req)
    assert exc.code is ErrorCode.BAD_FIELD
    assert exc.message == "a field is wrong"
    assert exc.req == req
    assert str(exc) == "E_BAD_FIELD: a field is wrong"


def test_protocol_error_req_defaults_to_none():
    assert ProtocolError(ErrorCode.INTERNAL, "x").req is None


@pytest.mark.parametrize(
    "usage, text", [("", "bad thing"), ("last <minutes>", "bad thing (usage: last <minutes>)")]
)
def test_usage_error_attributes(usage, text):
    exc = UsageError("bad thing", usage)
    assert isinstance(exc, ValueError)
    assert exc.message == "bad thing"
    assert exc.usage == usage
    assert str(exc) == text
