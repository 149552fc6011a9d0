"""How the terminal client shows things: pure functions from protocol values to one line of text.

Times are shown as HH:MM:SS in local time from the broker's `ts` (seconds since the epoch). Text
from other users is made safe for a terminal: control characters (escape sequences, newlines that
could fake a line from someone else) are replaced by U+FFFD, tabs by a space.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from typing import Iterable

from zmq_chat.client.lines import ACTION_PREFIX
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.replies import ErrorReply, StatusReply

PRESENCE_WORDS = {
    "login": "logged in",
    "logout": "logged out",
    "timeout": "timed out (idle)",
    "lost": "lost the connection",
    "busy": "is busy",
    "available": "is available again",
}
CATCHUP_PREFIX = "(while you were away) "
EPOCH_LOST = "the chat server lost its event history; events since you were last here are gone"
"""Said when a login finds another event log than the last one in this process (docs 9.4 Epoch)."""


def clock(ts: float) -> str:
    """Broker time `ts` (epoch seconds) as local "HH:MM:SS"; "--:--:--" when ts is not usable."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(ts))
    except (OverflowError, OSError, ValueError, TypeError):
        return "--:--:--"


def safe(text: str) -> str:
    """`text` with control characters (Unicode category Cc, except tab) replaced by U+FFFD."""
    if text.isprintable():
        return text
    return "".join(
        " " if ch == "\t" else "\ufffd" if unicodedata.category(ch) == "Cc" else ch for ch in text
    )


def group_of(msg: m.PrivateMessage) -> list[str]:
    """All recipients of a message sent to several users (its `group` field), else []."""
    return list(getattr(msg, "group", None) or [])


def message_kind(msg: m.PrivateMessage) -> str:
    """The colour kind (client.paint) of a received message: "group" or "private"."""
    return "group" if len(group_of(msg)) > 1 else "private"


def event_kind(event: m.Event) -> str:
    """The colour kind (client.paint) of an event: "bcast" or "presence"."""
    return "bcast" if event.kind == "bcast" else "presence"


def action_text(user: str, text: str) -> str | None:
    """"* alice waves" for a text sent with /me ("/me waves"), else None."""
    if text.startswith(ACTION_PREFIX) and text[len(ACTION_PREFIX):].strip():
        return f"* {safe(user)} {safe(text[len(ACTION_PREFIX):])}"
    return None


def private_line(msg: m.PrivateMessage) -> str:
    """A received private message: "[HH:MM:SS] alice: text"; a group message names every
    recipient: "[HH:MM:SS] alice to bob, carol: text"."""
    group = group_of(msg)
    to = f" to {', '.join(map(safe, group))}" if len(group) > 1 else ""
    return f"[{clock(msg.ts)}] {safe(msg.sender)}{to}: {safe(msg.text)}"


def event_line(event: m.Event, catchup: bool = False) -> str:
    """A broadcast "[HH:MM:SS] alice to all: text" or presence "[HH:MM:SS] * alice logged in";
    prefixed with "(while you were away) " when `catchup`."""
    prefix = CATCHUP_PREFIX if catchup else ""
    if event.kind == "bcast":
        action = action_text(event.user, event.text)
        if action:
            return f"{prefix}[{clock(event.ts)}] {action}"
        return f"{prefix}[{clock(event.ts)}] {safe(event.user)} to all: {safe(event.text)}"
    what = PRESENCE_WORDS.get(event.event, safe(event.event) or "changed")
    return f"{prefix}[{clock(event.ts)}] * {safe(event.user)} {what}"


def sent_line(ts: float, to: Iterable[str] | None, text: str) -> str:
    """What you sent: "[HH:MM:SS] you to bob, carol: text"; `to` None means a broadcast ("all")."""
    names = "all" if to is None else safe(", ".join(to))
    action = action_text("you", text) if to is None else None
    if action:
        return f"[{clock(ts)}] {action}"
    return f"[{clock(ts)}] you to {names}: {safe(text)}"


def error_line(reply: ErrorReply) -> str:
    """An error reply as "error: <message>", the broker's prose; its code ("error: <message>
    [E_CODE]") only when the client logs at DEBUG (--log-level DEBUG)."""
    line = f"error: {safe(reply.message)}"
    if logging.getLogger("zmq_chat.client").isEnabledFor(logging.DEBUG):
        line += f" [{safe(reply.code)}]"
    return line


def partly_sent_line(ts: float, got: list[str], text: str, unknown: list[str], full: list[str]) -> str:
    """One line for a send that some recipients did not get: "[HH:MM:SS] you to bob: text (no
    such user: zed)", or "not sent: no such user: zed" when nobody got it; "mailbox full: x" alike."""
    reasons = []
    if unknown:
        reasons.append(f"no such user: {', '.join(map(safe, unknown))}")
    if full:
        reasons.append(f"mailbox full: {', '.join(map(safe, full))}")
    why = "; ".join(reasons) or "not delivered"
    return f"{sent_line(ts, got, text)} ({why})" if got else f"not sent: {why}"


def users_line(users: Iterable[str], me: str, busy: Iterable[str] = ()) -> str:
    """Names separated by ", ", yourself marked with "*" and the busy with " (busy)" (e.g.
    "alice*, bob (busy)"); "(nobody)" if empty."""
    users, busy = list(users), set(busy)
    names = [safe(u) + ("*" if u == me else "") + (" (busy)" if u in busy else "") for u in users]
    return ", ".join(names) if names else "(nobody)"


def status_line(reply: StatusReply) -> str:
    """The `status` reply as one line: "alice: busy (text) | available, visible | hidden, logged in
    since HH:MM:SS"."""
    busy_text = safe(reply.busy_text)
    state = ("busy" + (f" ({busy_text})" if busy_text else "")) if reply.busy else "available"
    seen = "hidden" if reply.hidden else "visible"
    return f"{safe(reply.user)}: {state}, {seen}, logged in since {clock(reply.since_ts)}"
