"""Sending a broadcast or a private message from the terminal session: a send id per message,
retries with the same id (after a timeout, after E_RATE_LIMITED, on the broker that took the
session after a failover), and one line for the outcome (client.view)."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from zmq_chat.client import view
from zmq_chat.client.errors import ConnectionClosed, RequestTimeout
from zmq_chat.client.paint import say
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.replies import UNSET, BroadcastReply, ErrorReply, Reply, SendReply

if TYPE_CHECKING:
    from zmq_chat.client.connection import Connection
    from zmq_chat.client.failover import BrokerSet
    from zmq_chat.client.outputs import Session


class Sender:
    """Mixed into client.app.ChatSession, which provides conn, session, brokers, _sent_ids (the
    send ids of this session, to skip the echo of your own broadcasts), _switches, _settled()
    and _recover()."""

    conn: Connection
    session: Session
    brokers: BrokerSet | None
    _sent_ids: set[str]
    _switches: int

    async def _settled(self) -> None:
        raise NotImplementedError

    async def _recover(self, switches: int) -> None:
        raise NotImplementedError

    async def _send(self, to: list[str] | None, text: str) -> None:
        """Broadcast (to None) or send privately; one retry with the same id after a timeout, and
        up to three after E_RATE_LIMITED, each after its retry_after (at most 5 s)."""
        cid = uuid.uuid4().hex
        self._sent_ids.add(cid)
        msg: m.Request = m.Broadcast(req=0, id=cid, text=text) if to is None else m.Send(req=0, id=cid, to=to, text=text)
        reply = await self._send_request(msg)
        for _ in range(3):
            if not isinstance(reply, ErrorReply) or reply.code != ErrorCode.RATE_LIMITED:
                break
            wait = reply.retry_after
            if wait is UNSET or wait > 5:
                break
            await asyncio.sleep(wait)
            reply = await self._send_request(msg)
        if isinstance(reply, (BroadcastReply, SendReply)):
            say(view.sent_line(reply.ts, to, text), "own")
        elif isinstance(reply, ErrorReply) and reply.code in (ErrorCode.UNKNOWN_USER, ErrorCode.MAILBOX_FULL):
            ts = 0.0 if reply.ts is UNSET else reply.ts
            got = list(reply.ids or {})
            say(view.partly_sent_line(ts, got, text, reply.unknown or [], reply.full or []), "own" if got else "error")
        elif isinstance(reply, ErrorReply):
            say(view.error_line(reply), "error")
        busy = reply.busy if isinstance(reply, (SendReply, ErrorReply)) and reply.busy else []
        for entry in busy:
            auto = view.safe(entry.text)
            print(f"{view.safe(entry.user)} is busy" + (f": {auto}" if auto else ""))

    async def _send_request(self, msg: m.Request) -> Reply:
        """Send a broadcast or send `msg` and return its reply: after a timeout once more with the
        same id (stored once, docs 9.2); then, with several brokers, fail over and send it again,
        same id, on the broker that took the session (at most once per broker). Raises
        RequestTimeout / ConnectionClosed (no failover) or _Stop (the failover failed)."""
        timeout = max(1.0, self.session.heartbeat_timeout / 2)
        retried, failovers = False, 0
        while True:
            switches = self._switches
            await self._settled()
            try:
                return await self.conn.request(msg, timeout)
            except (RequestTimeout, ConnectionClosed) as exc:
                if isinstance(exc, RequestTimeout) and not retried:
                    retried = True
                    continue
                if self.brokers is None or failovers >= len(self.brokers):
                    raise
            await self._recover(switches)
            retried, failovers = False, failovers + 1
