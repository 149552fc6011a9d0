"""The summary of a login's catch-up ("while you were away"): the private messages and broadcasts
that arrived since the user was last online, counted and shown together, and presence condensed to
who is online now (the joins and quits in between are not replayed)."""

from __future__ import annotations

from typing import Any

from zmq_chat.client import view
from zmq_chat.client.outputs import EventReceived, MessageReceived
from zmq_chat.client.paint import say

WAIT_SECONDS = 5.0
"""Longest wait for the catch-up `history` before the summary is shown anyway (seconds)."""


def is_catchup(item: Any, since_ts: float) -> bool:
    """True for an output of the connection that is part of the login's catch-up: a private
    message stored before the session started (`since_ts`, epoch seconds), or an event of the
    catch-up history."""
    if isinstance(item, MessageReceived):
        return item.message.ts < since_ts
    return isinstance(item, EventReceived) and item.catchup


class CatchUpSummary:
    """Collects catch-up outputs (MessageReceived, EventReceived) until `show` is called."""

    def __init__(self) -> None:
        self.items: list[MessageReceived | EventReceived] = []

    def add(self, item: MessageReceived | EventReceived) -> None:
        """Keep a message or broadcast; presence is dropped (condensed into "online now")."""
        if isinstance(item, EventReceived) and item.event.kind != "bcast":
            return
        self.items.append(item)

    def show(self, online: list[str] | None, me: str) -> None:
        """Say "N messages while you were away" and the messages in time order (when any), then
        "online now: ..." (`online`: the `who` reply's names; None when it failed)."""
        def ts(item: MessageReceived | EventReceived) -> float:
            return item.message.ts if isinstance(item, MessageReceived) else item.event.ts

        items = sorted(self.items, key=ts)
        if items:
            say(f"{len(items)} message{'s' if len(items) != 1 else ''} while you were away")
        for item in items:
            if isinstance(item, MessageReceived):
                say(view.private_line(item.message), view.message_kind(item.message))
            else:
                say(view.event_line(item.event), view.event_kind(item.event))
        if online is not None:
            say(f"online now: {view.users_line(online, me)}", "presence")
