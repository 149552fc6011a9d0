"""A synchronous, non-blocking driver of one ClientCore for a plain `zmq.Poller` (no asyncio), for
programs that run many connections in one thread (e.g. a load tester):

    ctx, poller = zmq.Context(), zmq.Poller()
    conns = [SyncConnection(ctx, poller, "127.0.0.1", 4119) for _ in range(100)]
    for c in conns:
        c.send(m.Hello(req=0, version=PROTOCOL_VERSION))
    while running:
        ready = dict(poller.poll(timeout_ms))
        for c in conns:
            outputs = c.handle(ready) + c.tick()   # ReplyReceived, MessageReceived, EventReceived ...

After an ok `login` reply the SUB socket is opened (same CURVE keys as the DEALER), registered
with the poller, and the catch-up history follows the broker's welcome, exactly as
client.connection.Connection does. The broker key must be given (`keys`); trust on first use is
the interactive client's business.
"""

from __future__ import annotations

import zmq

from zmq_chat.client import sockets
from zmq_chat.client.core import ClientCore, Output, SessionEnded
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ProtocolError


class SyncConnection:
    """One DEALER (+ SUB in a session) on a caller-owned plain zmq.Context and zmq.Poller.

    Args:
        ctx: a plain zmq.Context (shared by many connections).
        poller: the zmq.Poller the caller polls; this object registers its sockets there.
        address: numeric broker address (see sockets.resolve_host); port: ROUTER port.
        core: the protocol state (a fresh ClientCore when None).
        server_key: the broker's public key (Z85 bytes); None speaks NULL (a broker run --insecure).
    Attributes:
        core, dealer, sub (None outside a session), errors (count of undecodable broker messages).
    Not thread-safe; never blocks: sends use NOBLOCK, and frames that do not fit (the DEALER is
    at its high-water mark or not yet connected) wait for the next flush, in order.
    """

    def __init__(self, ctx: zmq.Context, poller: zmq.Poller, address: str, port: int, *,
                 ipv6: bool = False, core: ClientCore | None = None, server_key: bytes | None = None) -> None:
        self.core = core or ClientCore()
        self._ctx, self._poller, self._address, self._ipv6 = ctx, poller, address, ipv6
        self.keys = sockets.CurveKeys.new(server_key)
        self.dealer = sockets.open_dealer(ctx, sockets.endpoint(address, port, ipv6), ipv6, keys=self.keys)
        poller.register(self.dealer, zmq.POLLIN)
        self.sub: zmq.Socket | None = None
        self.errors = 0
        self._backlog: list[list[bytes]] = []

    def send(self, msg: m.Request) -> int:
        """Queue `msg` (its req is replaced) and send what is queued. Returns the request id."""
        req = self.core.request(msg)
        self.flush()
        return req

    def flush(self) -> None:
        """Send what the core has queued (NOBLOCK); what does not fit stays for the next flush."""
        out = self._backlog + self.core.data_to_send()
        self._backlog = []
        for i, frames in enumerate(out):
            try:
                self.dealer.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                self._backlog = out[i:]
                return

    def handle(self, ready: dict) -> list[Output]:
        """Read every message waiting on this connection's sockets that `ready` (the dict of
        poller.poll()) marks readable; feed them to the core. Returns the core's outputs in order."""
        out: list[Output] = []
        if self.dealer in ready:
            out += self._drain(self.dealer, self.core.receive_dealer)
            if self.core.session is not None and self.sub is None:
                self._open_sub(self.core.session.pub_port)
            if any(isinstance(o, SessionEnded) for o in out) or (self.core.session is None and self.sub):
                self._close_sub()
        if self.sub is not None and self.sub in ready:
            out += self._drain(self.sub, self.core.receive_event)
        self.flush()
        return out

    def tick(self) -> list[Output]:
        """Run the core's timers (acks, pings, lost detection) and send what they queue."""
        out = self.core.tick()
        self.flush()
        return out

    def close(self) -> None:
        """Unregister and close the sockets (LINGER 0: a load tester does not wait)."""
        self._close_sub()
        self._poller.unregister(self.dealer)
        self.dealer.close(0)

    def _drain(self, sock: zmq.Socket, feed) -> list[Output]:
        out: list[Output] = []
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                out += feed(frames)
            except ProtocolError:
                self.errors += 1

    def _open_sub(self, pub_port: int) -> None:
        self.sub = sockets.open_sub(self._ctx, sockets.endpoint(self._address, pub_port, self._ipv6), self._ipv6,
                                    keys=self.keys, topics=self.core.sub_topics())
        self._poller.register(self.sub, zmq.POLLIN)
        self.core.sub_opened()

    def _close_sub(self) -> None:
        if self.sub is not None:
            self._poller.unregister(self.sub)
            self.sub.close(0)
            self.sub = None
