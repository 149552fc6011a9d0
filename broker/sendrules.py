"""What a `send` reply says (docs/protocol.md 6.2, 9.2): the digest that tells a retry from a reused
send id, and the code and sentence of a send that some recipients did not get. Pure."""

from __future__ import annotations

import zlib

from zmq_chat.protocol.errors import ErrorCode


def content_digest(to: list[str], text: str) -> int:
    """CRC-32 of a send's recipients and text: tells a retry (same id, same content) from a reused id."""
    return zlib.crc32("\x00".join([*to, text]).encode("utf-8", "surrogatepass"))


def refusal(unknown: list[str], full: list[str], sent: list[str]) -> tuple[ErrorCode, str]:
    """The code and message of a send that some recipients did not get: E_UNKNOWN_USER when a
    name has no account (it takes precedence), else E_MAILBOX_FULL."""
    parts = []
    if unknown:
        parts.append(f"no such user: {_names(unknown)}")
    if full:
        parts.append(f"mailbox full: {_names(full)}")
    message = "; ".join(parts) + (f" (sent to {_names(sent)})" if sent else "")
    return (ErrorCode.UNKNOWN_USER if unknown else ErrorCode.MAILBOX_FULL), message


def _names(names: list[str], most: int = 5) -> str:
    """Up to `most` names for a message, then how many more (the lists are in the reply)."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
