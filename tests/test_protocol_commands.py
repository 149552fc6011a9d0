"""Unit tests of the client command grammar, protocol.commands (docs/protocol.md, appendix)."""

from __future__ import annotations

import pytest

from zmq_chat.protocol.commands import (
    DESCRIPTIONS,
    MAX_LAST_MINUTES,
    USAGE,
    Broadcast,
    Busy,
    Command,
    Credentials,
    Last,
    Reg,
    Send,
    Simple,
    help_text,
    parse_command,
)
from zmq_chat.protocol.errors import UsageError
from zmq_chat.protocol.validation import DEFAULT_MAX_MESSAGE_CHARS

SIMPLE_WORDS = ["who", "idle", "hide", "appear", "status", "logout", "dereg", "help"]


def usage_error(line: str, **kwargs) -> UsageError:
    with pytest.raises(UsageError) as info:
        parse_command(line, **kwargs)
    return info.value


# -- tables -------------------------------------------------------------------------------------------


def test_usage_and_descriptions_cover_the_same_words():
    assert list(USAGE) == list(DESCRIPTIONS)
    assert set(SIMPLE_WORDS) | {"last", "broadcast", "send", "send_all", "busy", "reg", "login", "newuser"} == set(USAGE)


def test_help_text_lists_every_usage_form_and_description():
    text = help_text()
    for word, usage in USAGE.items():
        for form in usage.split(" | "):
            assert form in text
        assert DESCRIPTIONS[word] in text
    assert not any(line != line.rstrip() for line in text.splitlines())
    assert len(text.splitlines()) == sum(len(u.split(" | ")) for u in USAGE.values())


def test_max_last_minutes_is_one_week():
    assert MAX_LAST_MINUTES == 10080 == 7 * 24 * 60


# -- simple commands ----------------------------------------------------------------------------------


@pytest.mark.parametrize("word", SIMPLE_WORDS)
@pytest.mark.parametrize("form", ["{w}", "{W}", "{C}", "  {w}  ", "\t{w}\n"])
def test_simple_commands(word, form):
    line = form.format(w=word, W=word.upper(), C=word.capitalize())
    cmd = parse_command(line)
    assert cmd == Simple(word)
    assert isinstance(cmd, Command) and cmd.word == word


@pytest.mark.parametrize("word", SIMPLE_WORDS)
@pytest.mark.parametrize("extra", ["x", "now please", "1"])
def test_simple_commands_take_no_arguments(word, extra):
    err = usage_error(f"{word} {extra}")
    assert "takes no arguments" in err.message
    assert err.usage == USAGE[word]


# -- last ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, minutes",
    [("last 1", 1), ("last 10080", 10080), ("last 60", 60), ("LAST 5", 5), ("Last    5", 5), ("last\t7 ", 7),
     ("last 0010", 10), ("  last 10079  ", 10079)],
)
def test_last_accepts_1_to_10080(line, minutes):
    assert parse_command(line) == Last("last", minutes)


@pytest.mark.parametrize(
    "line",
    ["last", "last 0", "last 10081", "last 999999", "last 1000000", "last -1", "last +5", "last 1.5", "last 1e3",
     "last abc", "last 5 6", "last 5x", "last ٣", "last ５", "last 0x10"],
)  # fmt: skip
def test_last_rejects_everything_else(line):
    err = usage_error(line)
    assert "1 to 10080" in err.message
    assert err.usage == USAGE["last"] == "last <minutes>"


# -- broadcast ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, text",
    [
        ("broadcast hi", "hi"),
        ("BROADCAST hi", "hi"),
        ("broadcast   hi   there  ", "hi   there"),  # runs inside the text kept, ends dropped
        ("send_all hi", "hi"),
        ("Send_All  hello world", "hello world"),
        ("send all hi", "hi"),
        ("send ALL hi", "hi"),
        ("SEND All   spaced   out", "spaced   out"),
        ("send\tall\thi", "hi"),
        ("broadcast (not a list) x", "(not a list) x"),
    ],
)
def test_broadcast_forms(line, text):
    assert parse_command(line) == Broadcast("broadcast", text)


@pytest.mark.parametrize("line, word", [("broadcast", "broadcast"), ("broadcast    ", "broadcast"), ("send_all", "send_all"),
                                        ("send all", "send"), ("send all   ", "send")])
def test_broadcast_without_text(line, word):
    err = usage_error(line)
    assert "at least 1 character" in err.message
    assert err.usage == USAGE[word]


# -- send ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, to, text",
    [
        ("send bob hi", ("bob",), "hi"),
        ("SEND bob hi", ("bob",), "hi"),
        ("send   bob    hi   there ", ("bob",), "hi   there"),
        ("send Bob hi", ("Bob",), "hi"),  # usernames keep their case
        ("send bob (hi)", ("bob",), "(hi)"),
        ("send allx hi", ("allx",), "hi"),
        ("send bob éé 😀", ("bob",), "éé 😀"),
        ("send (bob) hi", ("bob",), "hi"),
        ("send (bob alice) hi", ("bob", "alice"), "hi"),
        ("send (  bob   alice  ) hi", ("bob", "alice"), "hi"),
        ("send (bob alice bob) hi", ("bob", "alice"), "hi"),  # duplicates dropped, order kept
        ("send (carol bob alice) hi", ("carol", "bob", "alice"), "hi"),
        ("send (bob)hi", ("bob",), "hi"),
        ("send (bob) a (b) c", ("bob",), "a (b) c"),
    ],
)
def test_send_forms(line, to, text):
    assert parse_command(line) == Send("send", to, text)


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("send", "missing user and message"),
        ("send    ", "missing user and message"),
        ("send bob", "at least 1 character"),
        ("send bob    ", "at least 1 character"),
        ("send (bob)", "at least 1 character"),
        ("send (bob alice)   ", "at least 1 character"),
        ("send () hi", "list of users is empty"),
        ("send (   ) hi", "list of users is empty"),
        ("send (bob hi", "missing ')'"),
        ("send (bob all) hi", "reserved"),
        ("send (bob ALL) hi", "reserved"),
        ("send (bob b) hi", "3 to 32"),
        ("send b hi", "3 to 32"),
        ("send bob! hi", "3 to 32"),
        ("send " + "a" * 33 + " hi", "3 to 32"),
    ],
)
def test_send_errors(line, fragment):
    err = usage_error(line)
    assert fragment in err.message
    assert err.usage == USAGE["send"]


def test_send_usage_names_all_three_forms():
    assert USAGE["send"].split(" | ") == ["send <user> <message>", "send (<user1> <user2> ...) <message>", "send all <message>"]


# -- busy ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, text",
    [("busy", ""), ("BUSY", ""), ("busy    ", ""), ("busy in a meeting", "in a meeting"),
     ("Busy   gone   fishing  ", "gone   fishing")],
)
def test_busy_with_and_without_text(line, text):
    assert parse_command(line) == Busy("busy", text)


# -- reg, login, newuser ------------------------------------------------------------------------------


@pytest.mark.parametrize("line, user", [("reg bob", "bob"), ("REG   Bob  ", "Bob"), ("reg " + "a" * 32, "a" * 32)])
def test_reg(line, user):
    assert parse_command(line) == Reg("reg", user)


@pytest.mark.parametrize(
    "line, fragment",
    [("reg", "exactly one username"), ("reg bob alice", "exactly one username"), ("reg b", "3 to 32"),
     ("reg all", "reserved"), ("reg bob!", "3 to 32")],
)
def test_reg_errors(line, fragment):
    err = usage_error(line)
    assert fragment in err.message
    assert err.usage == USAGE["reg"]


@pytest.mark.parametrize("word", ["login", "newuser"])
@pytest.mark.parametrize(
    "rest, user, password",
    [("bob secret99", "bob", "secret99"), ("  Bob    pw ", "Bob", "pw"), ("bob p@ss(w)rd!", "bob", "p@ss(w)rd!")],
)
def test_login_and_newuser(word, rest, user, password):
    assert parse_command(f"{word} {rest}") == Credentials(word, user, password)
    assert parse_command(f"{word.upper()} {rest}") == Credentials(word, user, password)


@pytest.mark.parametrize("word", ["login", "newuser"])
@pytest.mark.parametrize(
    "rest, fragment",
    [("", "a username and a password"), ("bob", "a username and a password"), ("bob pass word", "a username and a password"),
     ("b secret99", "3 to 32"), ("all secret99", "reserved"), ("ALL secret99", "reserved")],
)  # fmt: skip
def test_login_and_newuser_errors(word, rest, fragment):
    err = usage_error(f"{word} {rest}")
    assert fragment in err.message
    assert err.usage == USAGE[word]


# -- unknown and empty --------------------------------------------------------------------------------


@pytest.mark.parametrize("line, shown", [("frob", "frob"), ("FROB x y", "frob"), ("sendall hi", "sendall"),
                                         ("send(bob) hi", "send(bob)"), ("whoami", "whoami"), ("/who", "/who")])
def test_unknown_commands(line, shown):
    err = usage_error(line)
    assert f"unknown command '{shown}'" in err.message
    assert err.usage == ""


@pytest.mark.parametrize("line", ["", " ", "\t\n  "])
def test_empty_line(line):
    err = usage_error(line)
    assert "empty command" in err.message
    assert err.usage == ""


# -- message length -----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix, word", [("broadcast", "broadcast"), ("send_all", "send_all"), ("send all", "send"),
                                          ("send bob", "send"), ("send (bob alice)", "send")])
def test_message_at_and_over_the_default_limit(prefix, word):
    ok = parse_command(f"{prefix} " + "x" * DEFAULT_MAX_MESSAGE_CHARS)
    assert ok.text == "x" * DEFAULT_MAX_MESSAGE_CHARS  # type: ignore[attr-defined]
    err = usage_error(f"{prefix} " + "x" * (DEFAULT_MAX_MESSAGE_CHARS + 1))
    assert "at most 1000 characters" in err.message
    assert err.usage == USAGE[word]


@pytest.mark.parametrize("max_chars", [1, 5, 2000])
def test_message_limit_is_the_brokers(max_chars):
    assert parse_command("send bob " + "é" * max_chars, max_message_chars=max_chars) == Send("send", ("bob",), "é" * max_chars)
    err = usage_error("broadcast " + "é" * (max_chars + 1), max_message_chars=max_chars)
    assert f"at most {max_chars} characters" in err.message


def test_usage_error_string_carries_the_usage_line():
    err = usage_error("last x")
    assert str(err) == f"{err.message} (usage: last <minutes>)"
