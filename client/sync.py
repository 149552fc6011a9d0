"""A synchronous, non-blocking driver of one ClientCore for a plain `zmq.Poller` (no asyncio), for
programs that run many connections in one thread (e.g. a load tester):

    ctx, poller = zmq.Context(), zmq.Poller()
    conns = [SyncConnection(ctx, poller, "127.0.0.1", 4119) for _ in range(100)]
    for c in conns:
        c.send(hello_request("my-program"))
    while running:
        ready = dict(poller.poll(timeout_ms))
        for c in conns:
            outputs = c.handle(ready) + c.tick()   # ReplyReceived, MessageReceived, EventReceived ...

After an ok `login` reply the SUB socket is opened (same CURVE keys as the DEALER), registered
with the poller, and the catch-up history follows the broker's welcome (client.adapter.SubFollower,
shared with the asyncio client.connection.Connection). The broker key must be given (`server_key`);
trust on first use is the interactive client's business.

A caller with thousands of connections passes a `registry` dict and reads only the sockets that
poll() reports: `registry[sock]` names the owner, `read_dealer()` / `read_sub()` read one socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq

from zmq_chat.client import sockets
from zmq_chat.client.adapter import SubFollower
from zmq_chat.client.core import ClientCore, Output
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ProtocolError
from zmq_chat.protocol.wire import END, MSG, REPLY

DEALER_KINDS = frozenset((REPLY, MSG, END))
"""First frames of what a broker sends on the DEALER."""


class SyncConnection(SubFollower):
    """One DEALER (+ SUB in a session) on a caller-owned plain zmq.Context and zmq.Poller.

    Args:
        ctx: a plain zmq.Context (shared by many connections).
        poller: the zmq.Poller the caller polls; this object registers its sockets there.
        address: numeric broker address (see sockets.resolve_host); port: ROUTER port.
        core: the protocol state (a fresh ClientCore when None).
        server_key: the broker's public key (Z85 bytes); None speaks NULL (a broker run --insecure).
        registry: optional dict shared by the connections of one poller: every socket this object
            opens is entered as registry[socket] = owner (removed when it closes).
        owner: what the registry maps this object's sockets to (default: this object).
    Attributes:
        core, dealer (None once closed), sub (None outside a session), keys (sockets.CurveKeys), errors (count of
        broker messages that were not [kind, JSON body] or did not decode).
    Not thread-safe; never blocks: sends use NOBLOCK, and frames that do not fit (the DEALER is
    at its high-water mark or not yet connected) wait for the next flush, in order.
    """

    def __init__(self, ctx: zmq.Context, poller: zmq.Poller, address: str, port: int, *,
                 ipv6: bool = False, core: ClientCore | None = None, server_key: bytes | None = None,
                 registry: dict[Any, Any] | None = None, owner: Any = None) -> None:
        self.core = core or ClientCore()
        self._ctx, self._poller, self._address, self._ipv6 = ctx, poller, address, ipv6
        self._registry = registry
        self._owner = self if owner is None else owner
        self._sub_kinds = frozenset(self.core.sub_topics())
        self.keys = sockets.CurveKeys.new(server_key)
        self.dealer: zmq.Socket | None = sockets.open_dealer(ctx, sockets.endpoint(address, port, ipv6), ipv6, keys=self.keys)
        self._register(self.dealer)
        self.sub: zmq.Socket | None = None
        self.errors = 0
        self._backlog: list[list[bytes]] = []

    def send(self, msg: m.Request) -> int:
        """Queue `msg` (its req is replaced) and send what is queued. Returns the request id."""
        req = self.core.request(msg)
        self.flush()
        return req

    def flush(self) -> bool:
        """Send what the core has queued (NOBLOCK); what does not fit stays for the next flush.
        Returns True when nothing is left waiting (see `backlogged`)."""
        out = self.core.data_to_send()
        if self._backlog:
            out = self._backlog + out
            self._backlog = []
        assert self.dealer is not None, "flush() after close()"
        send = self.dealer.send_multipart
        for i, frames in enumerate(out):
            try:
                send(frames, zmq.NOBLOCK)
            except zmq.Again:
                self._backlog = out[i:]
                return False
        return True

    @property
    def backlogged(self) -> bool:
        """True when frames wait for the next `flush` (the DEALER was full)."""
        return bool(self._backlog)

    def handle(self, ready: dict) -> list[Output]:
        """Read every message waiting on this connection's sockets that `ready` (the dict of
        poller.poll()) marks readable; feed them to the core; flush. Returns the core's outputs
        in order (DEALER first)."""
        out: list[Output] = []
        if self.dealer in ready:
            out += self.read_dealer()
        if self.sub is not None and self.sub in ready:
            out += self.read_sub()
        self.flush()
        return out

    def read_dealer(self) -> list[Output]:
        """Feed every message waiting on the DEALER to the core (opens or closes the SUB when the
        session begins or ends). Returns the core's outputs; call `flush()` afterwards."""
        assert self.dealer is not None, "read_dealer() after close()"
        out = self._read(self.dealer, DEALER_KINDS, self.core.receive_dealer)
        self._follow_session()
        return out

    def read_sub(self) -> list[Output]:
        """Feed every message waiting on the SUB to the core ([] without a SUB). Returns the core's
        outputs; call `flush()` afterwards (a gap queues a `history` request)."""
        if self.sub is None:
            return []
        return self._read(self.sub, self._sub_kinds, self.core.receive_event)

    def tick(self) -> list[Output]:
        """Run the core's timers (acks, pings, lost detection) and send what they queue."""
        out = self.core.tick()
        self.flush()
        return out

    def drop_sub(self) -> None:
        """Close the SUB for the rest of this session (e.g. before a mass logout, whose presence
        events nobody will read); the next session opens a new one."""
        self._close_sub()

    def close(self) -> None:
        """Unregister and close the sockets (LINGER 0: a load tester does not wait). Idempotent."""
        self._close_sub()
        if self.dealer is not None:
            self._unregister(self.dealer)
            self.dealer.close(0)
            self.dealer = None

    # ---- internals ------------------------------------------------------------------------

    def _read(self, sock: zmq.Socket, kinds: frozenset[bytes], feed: Callable[[list[bytes]], list[Output]]) -> list[Output]:
        """Read [kind, body] messages until EAGAIN and feed them. Two plain recv() calls per message
        (recv_multipart costs several times more in pyzmq). A message that is not exactly two frames,
        whose first frame is not one of `kinds`, or whose body the core rejects (ProtocolError: not
        a JSON object, a malformed reply ...) is counted in `errors` and skipped to its end."""
        recv = sock.recv
        out: list[Output] = []
        while True:
            try:
                kind = recv(zmq.NOBLOCK)
            except zmq.Again:
                return out
            if kind not in kinds:
                self._skip(sock)
                continue
            if not sock.rcvmore:  # a lone frame: the next recv() would be the next message's first
                self.errors += 1
                continue
            body = recv(zmq.NOBLOCK)  # the rest of a multipart message has arrived with its first frame
            if sock.rcvmore:  # three or more frames
                self._skip(sock)
                continue
            try:
                out += feed([kind, body])
            except ProtocolError:
                self.errors += 1

    def _skip(self, sock: zmq.Socket) -> None:
        """A message was not [kind, {json}]: count it and skip to the end of it."""
        self.errors += 1
        while sock.rcvmore:
            sock.recv(zmq.NOBLOCK)

    def _register(self, sock: zmq.Socket) -> None:
        self._poller.register(sock, zmq.POLLIN)
        if self._registry is not None:
            self._registry[sock] = self._owner

    def _unregister(self, sock: zmq.Socket) -> None:
        self._poller.unregister(sock)
        if self._registry is not None:
            self._registry.pop(sock, None)

    def _open_sub(self, pub_port: int, topics: list[bytes]) -> None:
        self.sub = sockets.open_sub(self._ctx, sockets.endpoint(self._address, pub_port, self._ipv6), self._ipv6,
                                    keys=self.keys, topics=topics)
        self._register(self.sub)

    def _close_sub(self) -> None:
        if self.sub is not None:
            self._unregister(self.sub)
            self.sub.close(0)
            self.sub = None
