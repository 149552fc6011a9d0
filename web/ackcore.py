"""A ClientCore that acknowledges a private message only after the browser has it.

The terminal client shows a message the moment the core hands it over, so `ClientCore` queues the
ack at once. The web server is only a relay: a message is "shown" when the page says it rendered it
(`browser_has`). Until then it stays in the broker's mailbox, so a web server that dies in between
loses nothing (the next login pushes it again, and the page drops a repeat by its id).
"""

from __future__ import annotations

from collections.abc import Iterable

from zmq_chat.client.core import ClientCore, MessageReceived, Output
from zmq_chat.protocol import messages as m


class BrowserAckCore(ClientCore):
    """ClientCore whose acks wait for `browser_has` (same arguments as ClientCore)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._in_browser: set[int] = set()

    def _on_msg(self, msg: m.PrivateMessage) -> list[Output]:
        if msg.id in self._seen_msgs:
            if msg.id in self._in_browser:  # pushed again: our ack was lost, send it again
                self._enqueue_ack(msg.id)
            return []
        self._seen_msgs.add(msg.id)
        return [MessageReceived(msg)]

    def browser_has(self, ids: Iterable[int]) -> int:
        """The page rendered the private messages `ids` (mail ids): queue their acks (sent by the
        next `tick`, or at once when ack_batch are queued). Ids never handed out are ignored.
        Returns how many acks were queued."""
        queued = 0
        for mid in ids:
            if isinstance(mid, int) and mid in self._seen_msgs and mid not in self._in_browser:
                self._in_browser.add(mid)
                self._enqueue_ack(mid)
                queued += 1
        if len(self._ack_queue) >= self._ack_batch:
            self._flush_acks()
        return queued
