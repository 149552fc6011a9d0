"""Typed lines before parsing: IRC-style aliases (`/msg`, `/who`, `/quit`, `/me`, `/help`, and any
seed command with a leading "/") and which lines carry a password (kept out of the history).

`/me waves` becomes a broadcast of the text "/me waves"; the terminal client shows such a text as an
action, "* alice waves" (client.view.action_text).
"""

from __future__ import annotations

from zmq_chat.protocol.commands import USAGE

ALIASES: dict[str, str] = {"/msg": "send", "/query": "send", "/quit": "logout", "/exit": "logout",
                           "/who": "who", "/help": "help", "/names": "who", "/away": "busy", "/back": "idle"}
"""IRC command word -> the seed command word it stands for (the rest of the line is kept)."""

SECRET_WORDS = frozenset({"login", "newuser"})
"""Command words whose line carries a password."""

ALIASES_HELP = """\
  /msg <user> <message>      IRC habits: /msg = send, /who, /quit = logout, /help
  /me <action>               broadcast an action, shown as "* you <action>"
  /<command> ...             any command above may start with /
  Tab                        completes commands and user names"""
"""The lines `help` adds for the aliases."""

ACTION_PREFIX = "/me "
"""Start of a broadcast text sent with `/me` (an action)."""


def _split(line: str) -> tuple[str, str]:
    stripped = line.strip()
    word, _, rest = stripped.partition(" ")
    if "\t" in word:
        word, _, more = word.partition("\t")
        rest = more + " " + rest
    return word, rest.lstrip()


def expand_alias(line: str) -> str:
    """`line` with an IRC alias replaced by its seed command (e.g. "/msg bob hi" -> "send bob hi",
    "/me waves" -> "broadcast /me waves", "/status" -> "status"); other lines unchanged."""
    word, rest = _split(line)
    low = word.lower()
    if low == "/me":
        return f"broadcast {ACTION_PREFIX}{rest}" if rest else "broadcast"
    if low in ALIASES:
        return f"{ALIASES[low]} {rest}".rstrip()
    if low.startswith("/") and low[1:] in USAGE:
        return f"{low[1:]} {rest}".rstrip()
    return line


def is_secret(line: str) -> bool:
    """True when `line` (as typed, aliases allowed) is a command that carries a password."""
    word, _ = _split(expand_alias(line))
    return word.lower().lstrip("/") in SECRET_WORDS


def command_words() -> list[str]:
    """Every word a command line may start with: the seed commands, then the aliases and /forms."""
    words = list(USAGE)
    words += ["/me", *ALIASES]
    words += [f"/{w}" for w in USAGE if f"/{w}" not in ALIASES]
    return words
