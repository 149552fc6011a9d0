"""The client's command grammar: one typed line -> one Command, or a UsageError with the usage line.

Rules (issue #2, "Commands"; seed 000 for collapsing white space): runs of white space between
words count as one; command words are case-insensitive; message text is the rest of the line after
the last argument, kept as typed. A typo is caught here, before anything is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ProtocolError, UsageError
from .limits import MAX_LAST_MINUTES
from .validation import DEFAULT_MAX_MESSAGE_CHARS, validate_text, validate_username

USAGE: dict[str, str] = {
    "who": "who",
    "last": "last <minutes>",
    "broadcast": "broadcast <message>",
    "send": "send <user> <message> | send (<user1> <user2> ...) <message> | send all <message>",
    "send_all": "send_all <message>",
    "busy": "busy [auto-reply text]",
    "idle": "idle",
    "hide": "hide",
    "appear": "appear",
    "status": "status",
    "logout": "logout",
    "dereg": "dereg",
    "reg": "reg <user>",
    "login": "login <user> <password>",
    "newuser": "newuser <user> <password>",
    "help": "help",
}
"""Command word -> its usage line, in the order `help` lists them."""

DESCRIPTIONS: dict[str, str] = {
    "who": "users online now (you are marked with *)",
    "last": f"users online at any time in the last 1 to {MAX_LAST_MINUTES} minutes",
    "broadcast": "message every user",
    "send": "private message to one user, to several, or to all",
    "send_all": "message every user (same as broadcast)",
    "busy": "hold private messages until idle; senders get the auto-reply",
    "idle": "end busy and show what arrived meanwhile",
    "hide": "leave yourself out of who, last and presence notices",
    "appear": "show yourself again",
    "status": "your busy/visible state and login time",
    "logout": "end the session and quit",
    "dereg": "end the session and go back to the login prompt",
    "reg": "log in again as <user> (asks for the password)",
    "login": "log in (before a session)",
    "newuser": "create an account (before a session)",
    "help": "this list",
}


@dataclass(frozen=True)
class Command:
    """Base of parsed commands. `word` is the canonical command word (a key of USAGE)."""

    word: str


@dataclass(frozen=True)
class Simple(Command):
    """A command without arguments: who, idle, hide, appear, status, logout, dereg, help."""


@dataclass(frozen=True)
class Last(Command):
    """`last <minutes>`: minutes is a whole number 1..10080."""

    minutes: int


@dataclass(frozen=True)
class TextCommand(Command):
    """Base of the commands that carry one text, as typed (Broadcast, Busy)."""

    text: str


@dataclass(frozen=True)
class UserCommand(Command):
    """Base of the commands that name one user, a valid username (Reg, Credentials)."""

    user: str


@dataclass(frozen=True)
class Broadcast(TextCommand):
    """`broadcast <message>`, `send all <message>`, `send_all <message>`: text is not empty."""


@dataclass(frozen=True)
class Send(Command):
    """`send <user> <message>` or `send (<u1> <u2> ...) <message>`: `to` has no duplicates, in order."""

    to: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Busy(TextCommand):
    """`busy [auto-reply text]`: text may be ""."""


@dataclass(frozen=True)
class Reg(UserCommand):
    """`reg <user>`: log in again as user; the password is asked interactively."""


@dataclass(frozen=True)
class Credentials(UserCommand):
    """`login <user> <password>` or `newuser <user> <password>` (the password is one word here)."""

    password: str


_SIMPLE = ("who", "idle", "hide", "appear", "status", "logout", "dereg", "help")
_WORD_RE = re.compile(r"(\S+)(?:\s+(.*))?\Z", re.S)


def _split_word(text: str) -> tuple[str, str]:
    """Split `text` (already stripped) into its first word and the rest (stripped on the left)."""
    match = _WORD_RE.match(text)
    if not match:
        return "", ""
    return match.group(1), (match.group(2) or "")


def _check_text(text: str, word: str, max_chars: int) -> str:
    try:
        validate_text(text, max_chars)
    except ProtocolError as exc:
        raise UsageError(exc.message, USAGE[word]) from None
    return text


def _check_user(name: str, word: str) -> str:
    try:
        validate_username(name)
    except ProtocolError as exc:
        raise UsageError(f"'{name}': {exc.message}", USAGE[word]) from None
    return name


def parse_command(line: str, max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS) -> Command:
    """Parse one typed line into a Command.

    Args:
        line: the line as typed (str; surrounding white space is ignored).
        max_message_chars: the longest message text accepted, in characters (the broker's limit).
    Returns:
        a Command subclass instance; `word` is canonical (`send all x` gives Broadcast word "broadcast").
    Raises:
        UsageError: empty line, unknown command, missing or extra arguments, a bad username,
            minutes not a whole number in 1..10080, or an empty or oversize message; `usage` holds
            the usage line of the command meant.
    """
    word, rest = _split_word(line.strip())
    if not word:
        raise UsageError("empty command; type help for the list")
    word = word.lower()
    rest = rest.rstrip()
    if word in _SIMPLE:
        if rest:
            raise UsageError(f"'{word}' takes no arguments", USAGE[word])
        return Simple(word)
    if word == "last":
        if not re.fullmatch(r"[0-9]{1,6}", rest) or not 1 <= int(rest) <= MAX_LAST_MINUTES:
            raise UsageError(f"minutes must be a whole number from 1 to {MAX_LAST_MINUTES}", USAGE[word])
        return Last(word, int(rest))
    if word in ("broadcast", "send_all"):
        return Broadcast("broadcast", _check_text(rest, word, max_message_chars))
    if word == "send":
        return _parse_send(rest, max_message_chars)
    if word == "busy":
        if len(rest) > max_message_chars:
            raise UsageError(f"an auto-reply has at most {max_message_chars} characters", USAGE[word])
        return Busy(word, rest)
    if word == "reg":
        if not rest or len(rest.split()) != 1:
            raise UsageError("give exactly one username", USAGE[word])
        return Reg(word, _check_user(rest, word))
    if word in ("login", "newuser"):
        parts = rest.split()
        if len(parts) != 2:
            raise UsageError("give a username and a password", USAGE[word])
        return Credentials(word, _check_user(parts[0], word), parts[1])
    raise UsageError(f"unknown command '{word}'; type help for the list")


def _parse_send(rest: str, max_chars: int) -> Command:
    if rest.startswith("("):
        close = rest.find(")")
        if close < 0:
            raise UsageError("missing ')' after the list of users", USAGE["send"])
        names = rest[1:close].split()
        if not names:
            raise UsageError("the list of users is empty", USAGE["send"])
        text = rest[close + 1 :].lstrip()
        to = tuple(dict.fromkeys(_check_user(n, "send") for n in names))
        return Send("send", to, _check_text(text, "send", max_chars))
    user, text = _split_word(rest)
    if not user:
        raise UsageError("missing user and message", USAGE["send"])
    if user.lower() == "all":
        return Broadcast("broadcast", _check_text(text, "send", max_chars))
    return Send("send", (_check_user(user, "send"),), _check_text(text, "send", max_chars))


def help_text() -> str:
    """The `help` listing: one line per usage form, `usage  description`."""
    rows: list[tuple[str, str]] = []
    for word, usage in USAGE.items():
        forms = usage.split(" | ")
        rows.extend((form, DESCRIPTIONS[word] if k == 0 else "") for k, form in enumerate(forms))
    width = max(len(form) for form, _ in rows)
    return "\n".join(f"  {form:<{width}}  {desc}".rstrip() for form, desc in rows)
