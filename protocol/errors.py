"""Stable error codes and the two exception kinds of the protocol core.

Split as in h11: `ProtocolError` means *the peer* sent something we cannot accept (the broker answers
it with an error reply carrying `code`); `UsageError` means a person typed a command the client's
grammar rejects, caught before anything is sent.
"""

from __future__ import annotations

import enum


class ErrorCode(str, enum.Enum):
    """Stable error codes carried in the `code` field of an error reply (docs/protocol.md, "Error codes").

    The string values are part of the wire format and never change meaning.
    """

    FRAMES = "E_FRAMES"  # wrong number of frames
    UNKNOWN_TYPE = "E_UNKNOWN_TYPE"  # frame 0 names no known message type
    BAD_JSON = "E_BAD_JSON"  # body is not a UTF-8 JSON object
    BAD_FIELD = "E_BAD_FIELD"  # a field is missing, of the wrong type or out of range
    VERSION = "E_VERSION"  # protocol version mismatch
    NOT_LOGGED_IN = "E_NOT_LOGGED_IN"  # the request needs a logged-in session
    ALREADY_LOGGED_IN = "E_ALREADY_LOGGED_IN"  # login on a connection that has a session
    BAD_USERNAME = "E_BAD_USERNAME"  # username breaks the naming rule
    BAD_PASSWORD = "E_BAD_PASSWORD"  # password too short or too long (registration)
    USER_EXISTS = "E_USER_EXISTS"  # registration of a taken name
    UNKNOWN_USER = "E_UNKNOWN_USER"  # login to, or send to, a name with no account
    BAD_CREDENTIALS = "E_BAD_CREDENTIALS"  # wrong password
    BLOCKED = "E_BLOCKED"  # too many wrong passwords from this IP for this account
    SERVER_FULL = "E_SERVER_FULL"  # --max-clients sessions already logged in
    OVERLOADED = "E_OVERLOADED"  # too many logins waiting for password hashing; retry later
    MESSAGE_EMPTY = "E_MESSAGE_EMPTY"  # message text is empty
    MESSAGE_TOO_LONG = "E_MESSAGE_TOO_LONG"  # message text over --max-message-chars characters
    DUPLICATE_ID = "E_DUPLICATE_ID"  # a send id reused for a different message
    RATE_LIMITED = "E_RATE_LIMITED"  # too many requests or registrations; retry after retry_after seconds
    MAILBOX_FULL = "E_MAILBOX_FULL"  # a recipient's mailbox holds --mailbox-quota messages
    SHUTTING_DOWN = "E_SHUTTING_DOWN"  # the broker is stopping
    INTERNAL = "E_INTERNAL"  # the broker broke; the request may be retried


class ProtocolError(Exception):
    """The peer broke the protocol or sent a request the broker refuses.

    Attributes:
        code: the `ErrorCode` to put in the error reply.
        message: one human-readable sentence (no secrets, no message bodies).
        req: the request id to echo, when it could be read from the bad input, else None.
        fields: further fields of the error reply (e.g. {"retry_after": 1.0}), or None.
    """

    def __init__(self, code: ErrorCode, message: str, req: int | None = None, fields: dict | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.req = req
        self.fields = fields


class UsageError(ValueError):
    """A typed command does not match the client grammar (protocol.commands).

    Attributes:
        message: what is wrong, one sentence.
        usage: the usage line of the command that was meant (e.g. "send <user> <message>"), or "".
    """

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message if not usage else f"{message} (usage: {usage})")
        self.message = message
        self.usage = usage
