"""What the page is told, as JSON-ready dicts: pure functions from the client's outputs and the
broker's replies (no I/O). Text is passed as it is: the page renders every string with textContent.

Every dict has `t` (its kind). Kinds kept in a session's transcript (replayed when the page
reconnects) also get `n` from web.session: "msg" (private or group message), "bcast", "presence",
"mine" (what this user sent), "notice" (one line for the user).
"""

from __future__ import annotations

from typing import Any

from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.replies import UNSET, ErrorReply, Reply, SendReply

Item = dict[str, Any]

ENDED = {
    "shutdown": "The chat server is shutting down. Log in again once it is back.",
    "not_logged_in": "The chat server restarted and no longer knows this session. Please log in again.",
    "replaced": "You logged in somewhere else, so this session ended.",
    "idle_timeout": "You were logged out after a long time without activity.",
    "heartbeat_timeout": "The chat server stopped hearing from this page, so it ended the session.",
    "lost": "Lost the connection to the chat server: it does not answer. It may be down; log in again later.",
    "logout": "You are logged out.",
}
"""Why a session ended (SessionEnded.reason, plus "lost" and "logout") -> a plain sentence."""

ERRORS = {
    ErrorCode.BAD_CREDENTIALS.value: "wrong user name or password",
    ErrorCode.UNKNOWN_USER.value: "no such user",
}
"""Error codes said in other words than the broker's message."""


def error_text(reply: ErrorReply) -> str:
    """One sentence for an error reply (the broker's message unless ERRORS has a better one)."""
    return ERRORS.get(reply.code, reply.message or reply.code)


def private_item(msg: m.PrivateMessage, since_ts: float) -> Item:
    """A private or group message. `group`: every recipient when the broker names them (a `group`
    field on the push, absent from older brokers), else []. `away`: stored before this session began
    (shown after the "while you were away" divider)."""
    group = getattr(msg, "group", None) or []
    return {"t": "msg", "id": msg.id, "from": msg.sender, "to": msg.to, "group": [str(g) for g in group],
            "ts": msg.ts, "text": msg.text, "away": msg.ts < since_ts}


def event_item(event: m.Event, catchup: bool) -> Item:
    """A broadcast ("bcast") or presence event ("presence"); `away`: from the catch-up."""
    if event.kind == "bcast":
        return {"t": "bcast", "seq": event.seq, "ts": event.ts, "user": event.user, "text": event.text,
                "cid": event.cid, "away": catchup}
    return {"t": "presence", "seq": event.seq, "ts": event.ts, "user": event.user, "event": event.event,
            "away": catchup}


def sent_item(cid: str, to: list[str] | None, text: str, reply: Reply) -> Item:
    """What became of a send or broadcast: "mine" with the recipients that got it (`got`, all of
    `to` for a broadcast: None), the unknown ones, busy recipients with their auto-reply, and
    `error` (a sentence, "" when everybody got it)."""
    item: Item = {"t": "mine", "cid": cid, "to": to, "text": text, "ts": 0.0, "got": to, "unknown": [],
                  "busy": [], "error": ""}
    if isinstance(reply, SendReply):
        item.update(ts=reply.ts, got=list(reply.ids))
    elif isinstance(reply, ErrorReply):
        item["error"] = error_text(reply)
        item["got"] = list(reply.ids or {}) if reply.ids is not UNSET else []
        item["unknown"] = list(reply.unknown or []) if reply.unknown is not UNSET else []
        if reply.ts is not UNSET:
            item["ts"] = reply.ts
    else:
        item["ts"] = getattr(reply, "ts", 0.0)
    busy = getattr(reply, "busy", None)
    if busy and busy is not UNSET:
        item["busy"] = [{"user": b.user, "text": b.text} for b in busy]
    return item


def notice(text: str, level: str = "info") -> Item:
    """One line for the user; level "info" or "error"."""
    return {"t": "notice", "text": text, "level": level}
