"""The simulated clients of one load process and what their traffic means for the ledgers.

Each client is a client.sync.SyncConnection (a DEALER, plus a SUB in a session, driven by the
project's ClientCore) on one plain zmq.Poller that `Fleet.poll` drains: every ready socket is read
until EAGAIN. The outputs go to the ledgers (loadtest.ledgers): send replies are acks or errors,
private messages and broadcast events are deliveries whose latency is read from their text
(loadtest.texts), EventsMissed, SessionEnded and BrokerLost are counted. Times are
time.monotonic_ns() (one clock for every process on Linux). No asyncio, no per-message logging.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import zmq

from zmq_chat.client.core import (
    BrokerLost, ClientCore, EventReceived, EventsMissed, MessageReceived, Output, ReplyReceived, SessionEnded,
)
from zmq_chat.client.sync import SyncConnection
from zmq_chat.loadtest.latency import LatencyRecorder
from zmq_chat.loadtest.ledgers import BroadcastLedger, PrivateLedger, tally
from zmq_chat.loadtest.texts import Texts
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ProtocolError
from zmq_chat.protocol.replies import BroadcastReply
from zmq_chat.protocol.wire import TOPIC_BCAST, TOPIC_PRESENCE

TICK_S = 0.1
"""Seconds between ClientCore.tick() rounds (ack flush, heartbeat pings)."""
_NS = 1_000_000_000
_NOBLOCK, _RCVMORE = int(zmq.NOBLOCK), int(zmq.RCVMORE)
"""Plain ints: an enum argument costs a conversion per call."""
_FAST_TOPICS = frozenset((TOPIC_BCAST, TOPIC_PRESENCE))
"""Events counted on the SUB's hot path (Fleet._read_sub): broadcasts, and presence events (one
per login to every subscriber, so n logins deliver n^2 / 2 of them), which are only sequenced."""


class SimClient:
    """One simulated user: its connection (None until its first login) and local counters.

    Fields: name (account), broker (index of its broker in the config's `brokers`, 0 with one
    broker), conn (SyncConnection | None), login_seq (the login reply's seq), inflight (unanswered
    sends), reqs ({req: private n >= 0, or -1 - broadcast n}), alive (in a session that still goes
    on), login_req (the login in flight, 0 when none), login_t0 (monotonic ns it was sent),
    next_catch_up (monotonic ns of the next drain-time `history`).
    """

    __slots__ = ("name", "broker", "conn", "login_seq", "inflight", "reqs", "alive", "login_req", "login_t0",
                 "next_catch_up")

    def __init__(self, name: str, broker: int = 0) -> None:
        self.name = name
        self.broker = broker
        self.conn: SyncConnection | None = None
        self.login_seq = 0
        self.inflight = 0
        self.reqs: dict[int, int] = {}
        self.alive = False
        self.login_req = 0
        self.login_t0 = 0
        self.next_catch_up = 0


class Fleet:
    """The clients of one load process on one poller, their ledgers and the sending.

    Args:
        cfg: loadtest.worker.WorkerConfig (users, broker address and key, window, mix, size, seed).
        control_fd: a file descriptor polled with the sockets; `on_control()` is called when it
            is readable (the control pipe to the parent).
    Attributes:
        clients, active (logged-in clients: senders and private recipients), pled, bled (the
        ledgers), texts, inflight_total, sending (the run phase is on), refill (closed loop: an
        answered send is replaced at once), sent_per_second, sessions_ended {reason: n},
        broker_lost, per_broker ({"host:port": clients logged in there}, several brokers only),
        on_login_reply (called with (client, ReplyReceived) for a login reply).
    """

    def __init__(self, cfg: Any, control_fd: int, on_control: Callable[[], None]) -> None:
        self.cfg = cfg
        self.rng = random.Random(None if cfg.seed is None else cfg.seed * 1009 + cfg.worker)
        spread = cfg.broker_of or [0] * len(cfg.users)
        self.clients = [SimClient(n, b) for n, b in zip(cfg.users, spread, strict=True)]
        self.per_broker: dict[str, int] = {}
        self.active: list[SimClient] = []
        self.ctx = zmq.Context()
        self.ctx.max_sockets = max(1024, 2 * len(self.clients) + 64)
        self.poller = zmq.Poller()
        self.poller.register(control_fd, zmq.POLLIN)
        self._control_fd = control_fd
        self._on_control = on_control
        self.owner: dict[Any, SimClient] = {}  # socket -> client (kept by the SyncConnections)
        self.blocked: set[SimClient] = set()  # clients whose DEALER was full at the last flush
        self.texts = Texts(cfg.run_tag, cfg.worker, cfg.size)
        self._tag_bytes = cfg.run_tag.encode("ascii")
        self.pled = PrivateLedger(0)
        self.bled = BroadcastLedger(0)
        self.start_ns = 0
        self.inflight_total = 0
        self.sending = False
        self.refill = cfg.rate is None
        self.sent_per_second: list[int] = []
        self.sessions_ended: dict[str, int] = {}
        self.broker_lost = 0
        self.on_login_reply: Callable[[SimClient, ReplyReceived], None] = lambda c, o: None
        self._next_tick = 0.0

    # ---- sockets -----------------------------------------------------------------------------

    def open(self, c: SimClient) -> SyncConnection:
        """Connect the client's DEALER (just before its first login: a broker cuts connections that
        stay silent without logging in for --login-timeout seconds, and a login sent just as its
        connection is cut would be lost). Returns the connection."""
        cfg = self.cfg
        brokers = cfg.brokers
        if brokers:
            _, address, port, ipv6, key = brokers[c.broker]
        else:
            address, port, ipv6, key = cfg.address, cfg.port, cfg.ipv6, cfg.server_key
        c.conn = SyncConnection(self.ctx, self.poller, address, port, ipv6=ipv6, server_key=key,
                                registry=self.owner, owner=c)
        return c.conn

    def flush(self, c: SimClient) -> None:
        """Send what the client's core queued; remember it when the DEALER is full."""
        if c.conn is not None and not c.conn.flush():
            self.blocked.add(c)

    def poll(self, timeout_ms: float) -> None:
        """One poll; drain every ready socket until EAGAIN and account for what came in."""
        for sock, _ in self.poller.poll(max(0, int(timeout_ms))):
            if sock == self._control_fd:
                self._on_control()
                continue
            c = self.owner.get(sock)
            if c is not None and c.conn is not None:
                self._read(c, c.conn, sock)
        if self.blocked:
            blocked, self.blocked = self.blocked, set()
            for c in blocked:
                self.flush(c)

    def housekeeping(self, now_s: float) -> None:
        """Every TICK_S seconds (monotonic `now_s`): run every core's timers (acks, pings)."""
        if now_s < self._next_tick:
            return
        self._next_tick = now_s + TICK_S
        for c in self.clients:
            if c.conn is not None:
                outs = c.conn.core.tick()
                if outs:
                    self._outputs(c, outs, True)
                self.flush(c)

    def bad_frames(self) -> int:
        """Broker messages that were not [kind, JSON body] or did not decode, over all clients."""
        return sum(c.conn.errors for c in self.clients if c.conn is not None)

    def close(self) -> None:
        """Close every socket (linger 0) and the context. Idempotent."""
        for c in self.clients:
            if c.conn is not None:
                c.conn.close()
                c.conn = None
        self.ctx.term()

    # ---- what comes in -----------------------------------------------------------------------

    def _read(self, c: SimClient, conn: SyncConnection, sock: Any) -> None:
        if sock is conn.dealer:
            outs = conn.read_dealer()  # a login reply opens the SUB (client.adapter.SubFollower)
            if outs:
                self._outputs(c, outs, True)
        elif sock is conn.sub:
            self._read_sub(c, conn, sock)
        self.flush(c)  # acks, or a history request for a gap

    def _read_sub(self, c: SimClient, conn: SyncConnection, sock: Any) -> None:
        """Read every message waiting on the SUB. The hot path, a live broadcast or presence event
        that is the next in sequence, is taken without decoding: its seq (and a broadcast's send
        time, for the ledger) are read from the JSON
        bytes (msgspec writes Event fields in declaration order, seq first; our texts need no
        escaping) and the core's sequence is moved on. Everything else (heartbeats, welcomes, an
        event after a gap, a body of another shape) goes to ClientCore.receive_event as
        SyncConnection.read_sub would feed it. Frames are read in pairs without asking ZMQ_RCVMORE
        (pyzmq's getsockopt costs ~0.6 us, twice a plain recv): a pair that is not [topic, {json}]
        counts in conn.errors and the rest of its message is skipped; a third frame after a good
        pair is taken for the next message's topic and caught the same way."""
        recv, core = sock.recv, conn.core
        while True:  # until zmq.Again (2-3 us once per drain; a ZMQ_EVENTS check per message costs more)
            try:
                kind = recv(_NOBLOCK)
            except zmq.Again:
                return
            try:
                body = recv(_NOBLOCK)  # a message's frames arrive together
            except zmq.Again:  # a lone last frame
                conn.errors += 1
                return
            if body[:1] != b"{" or kind[:1] == b"{":  # not [topic, {json}]: find the next message
                conn.errors += 1
                while sock.getsockopt(_RCVMORE):
                    recv(_NOBLOCK)
                continue
            st = core._seq  # client.sequence._SeqState (None outside a session)
            if (kind in _FAST_TOPICS and st is not None and st.history_req is None and not st.held
                    and body.startswith(b'{"seq":')):
                end = body.find(b",", 7)
                seq = int(body[7:end]) if 7 < end < 30 and body[7:end].isdigit() else -1
                if seq == st.last + 1:
                    st.last = seq
                    if kind == TOPIC_BCAST and seq > c.login_seq:
                        self._count_broadcast(seq, body)
                    continue
            try:
                outs = core.receive_event([kind, body])
            except ProtocolError:
                conn.errors += 1
                continue
            for o in outs:
                if isinstance(o, EventReceived) and o.event.kind == "bcast" and o.event.seq > c.login_seq:
                    sent = self.texts.read_broadcast(o.event.text)
                    if sent is not None:
                        now = time.monotonic_ns()
                        self.bled.delivered(o.event.seq, now, now - sent if sent else None)  # 0: unreadable
                elif not isinstance(o, EventReceived):
                    self._outputs(c, [o], False)

    def _count_broadcast(self, seq: int, body: bytes) -> None:
        """Account broadcast event `seq` (a JSON Event body) if its text is this run's: its send
        time follows the run tag's head in the "text" field (0 when unreadable: delivered with no
        latency)."""
        at = body.find(b'"text":"') + 8
        if at < 8 or not body.startswith(self._tag_bytes, at):
            return  # another run's broadcast (or no text): not ours to count
        quote = body.find(b'"', at)
        space = body.find(b" ", at, quote)
        after = body.find(b" ", space + 1, quote) if space >= 0 else -1
        ns = body[space + 1:after if after >= 0 else quote] if space >= 0 else b""
        sent = int(ns) if ns.isdigit() else 0
        now = time.monotonic_ns()
        self.bled.delivered(seq, now, now - sent if sent else None)

    def _outputs(self, c: SimClient, outs: list[Output], from_dealer: bool) -> None:
        """Account for the core's outputs; `from_dealer`: events out of a `history` reply (repaired)."""
        for o in outs:
            if isinstance(o, ReplyReceived):
                self._reply(c, o)
            elif isinstance(o, MessageReceived):
                mine = self.texts.read_private(o.message.text)
                if mine is not None:
                    now = time.monotonic_ns()
                    self.pled.delivered(mine[0], now, now - mine[1])
            elif isinstance(o, EventReceived):
                ev = o.event
                if ev.kind == "bcast" and ev.seq > c.login_seq:
                    sent = self.texts.read_broadcast(ev.text)
                    if sent is not None:
                        now = time.monotonic_ns()
                        self.bled.delivered(ev.seq, now, now - sent if sent else None, from_dealer)
            elif isinstance(o, EventsMissed):
                self.bled.missed_ranges += 1
            elif isinstance(o, SessionEnded):
                tally(self.sessions_ended, o.reason)
                self._leave(c)
            elif isinstance(o, BrokerLost):
                self.broker_lost += 1

    def _reply(self, c: SimClient, o: ReplyReceived) -> None:
        n = c.reqs.pop(o.req, None)
        if n is None:
            if o.req == c.login_req:
                self.on_login_reply(c, o)
            return
        c.inflight -= 1
        self.inflight_total -= 1
        if n >= 0:
            if o.ok:
                self.pled.acked(n)
            else:
                self.pled.failed(n, o.code or "error")
        elif isinstance(o.body, BroadcastReply):  # ok
            self.bled.acked(-1 - n, o.body.seq)
        else:
            self.bled.failed(-1 - n, o.code or "error")
        if self.sending and self.refill and c.alive:
            now = time.monotonic_ns()
            while c.inflight < self.cfg.window:
                self.send_one(c, now)

    # ---- sessions and sending ----------------------------------------------------------------

    def begin(self, start_ns: int) -> None:
        """The run starts at `start_ns` (monotonic ns): second 0 of the latency histograms and of
        sent_per_second."""
        self.start_ns = start_ns
        self.pled.latency = LatencyRecorder(start_ns)
        self.bled.latency = LatencyRecorder(start_ns)

    def sessions(self) -> list[tuple[SimClient, ClientCore]]:
        """(client, core) of every active client."""
        return [(c, c.conn.core) for c in self.active if c.conn is not None]

    def join(self, c: SimClient) -> None:
        """The client's login succeeded: it sends, receives private messages and subscribes."""
        assert c.conn is not None and c.conn.core.session is not None
        c.login_seq = c.conn.core.session.seq
        c.alive = True
        self.active.append(c)
        self.bled.add_subscriber(c.login_seq)
        brokers = self.cfg.brokers
        if brokers:
            tally(self.per_broker, brokers[c.broker][0])

    def _leave(self, c: SimClient) -> None:
        if c.alive:
            c.alive = False
            self.active = [x for x in self.active if x is not c]

    def send_one(self, c: SimClient, now: int) -> None:
        """Queue one message from `c` sent at `now` (monotonic ns): a broadcast with probability
        broadcast_ratio, else a private message to a random other active client. Call `flush`."""
        cfg = self.cfg
        assert c.conn is not None
        core = c.conn.core
        if cfg.broadcast_ratio and self.rng.random() < cfg.broadcast_ratio:
            n = self.bled.new_message()
            head, text = self.texts.broadcast(n, now)
            c.reqs[core.request(m.Broadcast(req=0, id=head, text=text))] = -1 - n
        else:
            active = self.active
            rcpt = active[self.rng.randrange(len(active))]
            if rcpt is c and len(active) > 1:
                rcpt = active[self.rng.randrange(len(active))]
            n = self.pled.new_message()
            head, text = self.texts.private(n, now)
            c.reqs[core.request(m.Send(req=0, id=head, to=[rcpt.name], text=text))] = n
        c.inflight += 1
        self.inflight_total += 1
        sec = (now - self.start_ns) // _NS
        sps = self.sent_per_second
        while len(sps) <= sec:
            sps.append(0)
        sps[sec] += 1
