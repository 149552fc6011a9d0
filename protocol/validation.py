"""Validation rules for usernames, passwords and message text (issue #2, "Accounts" and "Commands").

Every function returns None when the value is valid and raises `ProtocolError` with a stable code
otherwise, so the broker and the client apply the same rule.
"""

from __future__ import annotations

import re

from .errors import ErrorCode, ProtocolError
from .limits import USERNAME_PATTERN

USERNAME_RE = re.compile(USERNAME_PATTERN)
"""A username is 3 to 32 ASCII letters or digits, case-sensitive (seed 002: 3 to 32 characters)."""

RESERVED_USERNAMES = frozenset({"all"})
"""Names no account may take: `all` is the broadcast address of `send all <message>`."""

DEFAULT_MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_BYTES = 1024
DEFAULT_MAX_MESSAGE_CHARS = 1000


def validate_username(name: str) -> None:
    """Check a username: 3 to 32 ASCII letters or digits, and not a reserved name (case-insensitive).

    Raises:
        ProtocolError(E_BAD_USERNAME): the name breaks the rule.
    """
    if not isinstance(name, str) or not USERNAME_RE.fullmatch(name):
        raise ProtocolError(ErrorCode.BAD_USERNAME, "a username is 3 to 32 letters or digits")
    if name.lower() in RESERVED_USERNAMES:
        raise ProtocolError(ErrorCode.BAD_USERNAME, f"the name '{name}' is reserved")


def is_valid_username(name: str) -> bool:
    """True when `validate_username(name)` would pass."""
    try:
        validate_username(name)
    except ProtocolError:
        return False
    return True


def validate_password(password: str, min_chars: int = DEFAULT_MIN_PASSWORD_CHARS) -> None:
    """Check a new password: at least `min_chars` characters, at most 1024 bytes in UTF-8.

    Raises:
        ProtocolError(E_BAD_PASSWORD): too short or too long.
    """
    if len(password) < min_chars:
        raise ProtocolError(ErrorCode.BAD_PASSWORD, f"a password has at least {min_chars} characters")
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise ProtocolError(ErrorCode.BAD_PASSWORD, f"a password has at most {MAX_PASSWORD_BYTES} bytes")


def validate_text(text: str, max_chars: int = DEFAULT_MAX_MESSAGE_CHARS) -> None:
    """Check a message body: 1 to `max_chars` characters (Unicode code points), not only white space.

    Raises:
        ProtocolError(E_MESSAGE_EMPTY): empty or only white space.
        ProtocolError(E_MESSAGE_TOO_LONG): more than `max_chars` characters.
    """
    if not text or text.isspace():
        raise ProtocolError(ErrorCode.MESSAGE_EMPTY, "a message has at least 1 character")
    if len(text) > max_chars:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LONG, f"a message has at most {max_chars} characters (got {len(text)})"
        )
