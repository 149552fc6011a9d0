"""One load process: many simulated clients, each a real DEALER + SUB pair (client.sockets) driven by
the project's own protocol state machine (client.core.ClientCore), in one plain zmq.Poller loop that
drains every ready socket with NOBLOCK until EAGAIN. No asyncio, no per-message logging.

Phases (the parent, loadtest.runner, drives them over a multiprocessing Pipe):

    worker                                   parent
    log in all clients (bounded parallel)
      ("login", done, ok)            ->      (progress, a few times a second)
      ("ready", ok, {code: n})       ->
                                     <-      ("start", start_ns, end_ns)      monotonic ns
    send until end_ns
      ("progress", dict)             ->      (every PROGRESS_S)
    wait for the replies (<= end_ns + drain)
      ("stopped", max_seq)           ->
                                     <-      ("drain", target_seq, deadline_ns)
    wait until every acked private message arrived and every subscriber reached target_seq
    (asking `history` for the ones behind), or the deadline
      ("report", WorkerReport)       ->
    log out, close
    On a failure: ("error", traceback text). A closed pipe (parent gone) ends the worker.

Times are time.monotonic_ns(), which is one clock for all processes on Linux, so a latency is
receive time minus the send time carried in the message text (loadtest.accounting.make_text).
Private recipients are clients of the same process, so private accounting stays local.
"""

from __future__ import annotations

import random
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

import zmq

from zmq_chat.client.core import BrokerLost, ClientCore, EventReceived, EventsMissed, MessageReceived, ReplyReceived, SessionEnded
from zmq_chat.client.sockets import CurveKeys, endpoint, open_dealer, open_sub
from zmq_chat.loadtest.accounting import (
    BroadcastLedger,
    LatencyRecorder,
    LoginPart,
    PrivateLedger,
    WorkerReport,
    make_text,
    new_histogram,
    send_ns_of,
)
from zmq_chat.loadtest.spawn import raise_fd_limit
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode, ProtocolError
from zmq_chat.protocol.version import PROTOCOL_VERSION

TICK_S = 0.1
"""Seconds between ClientCore.tick() rounds (ack flush, heartbeat pings)."""
PROGRESS_S = 0.5
"""Seconds between progress messages to the parent."""
RATE_WINDOW_S = 2.0
"""Live rates are averaged over this many seconds."""
LOGIN_REPLY_TIMEOUT_S = 30.0
"""Seconds one login may wait for its reply before it counts as failed ("timeout")."""
RETRY_DELAY_S = 0.05
"""Seconds before a login answered E_OVERLOADED is sent again."""
CATCH_UP_EVERY_S = 0.5
"""During the drain: how often a subscriber behind the target seq asks `history` again."""
LOGOUT_WAIT_S = 1.0
"""Seconds to wait for logout replies at the very end."""

_NS = 1_000_000_000
_DEALER_KINDS = frozenset((b"reply", b"msg", b"end"))
_TOPICS = frozenset((b"bcast", b"presence", b"hb"))


@dataclass
class WorkerConfig:
    """What one load process needs (picklable).

    Fields: worker (index), address/port/ipv6 (numeric broker ROUTER address), users (account
    names of this process's clients), password, rate (messages/s per client, None = closed loop),
    window (most unanswered sends per client), broadcast_ratio (0..1), size (text characters),
    run_tag (letters/digits marking this run's messages), login_parallel (logins in flight in this
    process), login_timeout (seconds for the whole login phase), drain (seconds after end_ns to
    wait for replies), seed (random seed or None), server_key (the broker's public key, Z85 bytes;
    None speaks NULL).
    """

    worker: int
    address: str
    port: int
    ipv6: bool
    users: list[str]
    password: str
    rate: float | None
    window: int
    broadcast_ratio: float
    size: int
    run_tag: str
    login_parallel: int
    login_timeout: float
    drain: float
    seed: int | None = None
    server_key: bytes | None = None


class ParentGone(Exception):
    """The control pipe closed: the parent is gone, stop at once."""


class _Client:
    """One simulated user: socket pair, protocol core and local counters."""

    __slots__ = ("name", "core", "dealer", "sub", "login_seq", "inflight", "reqs", "alive", "backlog",
                 "login_req", "login_t0", "next_catch_up", "keys")

    def __init__(self, name: str, server_key: bytes | None = None) -> None:
        self.name = name
        self.core = ClientCore()
        self.keys = CurveKeys.new(server_key)
        self.dealer: zmq.Socket | None = None
        self.sub: zmq.Socket | None = None
        self.login_seq = 0
        self.inflight = 0
        self.reqs: dict[int, int] = {}  # req -> private n (>= 0) or broadcast -1-n
        self.alive = False  # logged in and the session still going
        self.backlog: list[list[bytes]] | None = None  # frames that hit the send HWM
        self.login_req = 0
        self.login_t0 = 0
        self.next_catch_up = 0


class LoadWorker:
    """The poller loop of one load process. `run()` does every phase and returns when done.

    Args:
        cfg: WorkerConfig.
        control: the worker's end of the control channel, a multiprocessing.connection.Connection
            (send/recv/poll/fileno); see the module docstring for the messages.
    """

    def __init__(self, cfg: WorkerConfig, control: Any) -> None:
        self.cfg = cfg
        self.ctl = control
        self.ctl_fd = control.fileno()
        self.inbox: deque[tuple] = deque()
        self.rng = random.Random(None if cfg.seed is None else cfg.seed * 1009 + cfg.worker)
        self.clients = [_Client(n, cfg.server_key) for n in cfg.users]
        self.active: list[_Client] = []  # alive clients: senders and private recipients
        self.ctx = zmq.Context()
        self.ctx.max_sockets = max(1024, 2 * len(self.clients) + 64)
        self.poller = zmq.Poller()
        self.poller.register(self.ctl_fd, zmq.POLLIN)
        self.owner: dict[Any, tuple[_Client, bool]] = {}
        self.blocked: set[_Client] = set()
        self.login = LoginPart()
        self.login_hist = new_histogram()
        self.start_ns = 0
        self.end_ns = 0
        self.pled = PrivateLedger(0)
        self.bled = BroadcastLedger(0)
        self.sent_per_second: list[int] = []
        self.sessions_ended: dict[str, int] = {}
        self.broker_lost = 0
        self.skipped = 0
        self.bad_frames = 0
        self.inflight_total = 0
        self.sending = False
        self.refill = cfg.rate is None
        self.ptag = f"{cfg.run_tag}w{cfg.worker}p"
        self.btag = f"{cfg.run_tag}w{cfg.worker}b"
        self.pad = "x" * max(cfg.size, 1)
        self.next_tick = 0.0
        self.next_progress = 0.0
        self._retry: deque[tuple[float, _Client]] = deque()  # logins answered E_OVERLOADED
        self._samples: deque[tuple[int, int, int, int]] = deque()  # (ns, sent, p delivered, b delivered)

    # ---- control pipe ------------------------------------------------------------------------

    def _send(self, msg: tuple) -> None:
        try:
            self.ctl.send(msg)
        except (BrokenPipeError, EOFError, OSError):
            raise ParentGone() from None

    def _read_control(self) -> None:
        try:
            while self.ctl.poll(0):
                msg = self.ctl.recv()
                if msg[0] == "abort":
                    raise ParentGone()
                self.inbox.append(msg)
        except (EOFError, OSError):
            raise ParentGone() from None

    def _take(self, kind: str) -> tuple | None:
        for msg in self.inbox:
            if msg[0] == kind:
                self.inbox.remove(msg)
                return msg
        return None

    # ---- socket plumbing ---------------------------------------------------------------------

    def _flush(self, c: _Client) -> None:
        out = c.core.data_to_send()
        if c.backlog:
            out = c.backlog + out
            c.backlog = None
        if not out:
            return
        send = c.dealer.send_multipart  # type: ignore[union-attr]
        for i, frames in enumerate(out):
            try:
                send(frames, zmq.NOBLOCK)
            except zmq.Again:
                c.backlog = out[i:]
                self.blocked.add(c)
                return

    def _poll(self, timeout_ms: float) -> None:
        """One poll; drain every ready socket until EAGAIN and hand the frames to the cores."""
        for sock, _ in self.poller.poll(max(0, int(timeout_ms))):
            if sock == self.ctl_fd:
                self._read_control()
                continue
            c, is_sub = self.owner[sock]
            if is_sub:
                self._drain_sub(c, sock)
            else:
                self._drain_dealer(c, sock)
        if self.blocked:
            blocked, self.blocked = self.blocked, set()
            for c in blocked:
                self._flush(c)

    def _resync(self, sock: zmq.Socket) -> None:
        """A message was not [kind, {json}]: skip to the end of the current multipart message."""
        self.bad_frames += 1
        while sock.getsockopt(zmq.RCVMORE):
            sock.recv(zmq.NOBLOCK)

    def _drain_dealer(self, c: _Client, sock: zmq.Socket) -> None:
        # Two plain recv() calls per message: recv_multipart costs ~6x more in pyzmq. The broker
        # always sends exactly [kind, body]; anything else is detected and skipped by _resync.
        recv = sock.recv
        core = c.core
        kinds = _DEALER_KINDS
        while True:
            try:
                kind = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                body = recv(zmq.NOBLOCK)
            except zmq.Again:  # a lone frame
                self.bad_frames += 1
                break
            if kind not in kinds or body[:1] != b"{":
                self._resync(sock)
                continue
            try:
                outs = core.receive_dealer([kind, body])
            except ProtocolError:
                self.bad_frames += 1
                continue
            if outs:
                self._outputs(c, outs, True)
        self._flush(c)

    def _drain_sub(self, c: _Client, sock: zmq.Socket) -> None:
        recv = sock.recv
        core = c.core
        deliver = self.bled.delivered
        tag = self.cfg.run_tag
        clock = time.monotonic_ns
        topics = _TOPICS
        while True:
            try:
                topic = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if topic not in topics and topic != core.welcome_topic:
                self._resync(sock)
                continue
            try:
                body = recv(zmq.NOBLOCK)
            except zmq.Again:
                self.bad_frames += 1
                break
            if body[:1] != b"{":
                self._resync(sock)
                continue
            try:
                outs = core.receive_event([topic, body])
            except ProtocolError:
                self.bad_frames += 1
                continue
            for o in outs:
                if type(o) is EventReceived:
                    ev = o.event
                    if ev.kind == "bcast" and ev.seq > c.login_seq and ev.text.startswith(tag):
                        now = clock()
                        deliver(ev.seq, now, now - send_ns_of(ev.text))
                else:
                    self._outputs(c, [o], False)
        self._flush(c)  # a gap queues a history request

    def _outputs(self, c: _Client, outs: list, from_dealer: bool) -> None:
        for o in outs:
            t = type(o)
            if t is ReplyReceived:
                self._reply(c, o)
            elif t is MessageReceived:
                text = o.message.text
                head, _, rest = text.partition(" ")
                if head.startswith(self.ptag):
                    now = time.monotonic_ns()
                    try:
                        n = int(head[len(self.ptag):], 16)
                        sent = int(rest.partition(" ")[0])
                    except ValueError:
                        self.pled.foreign += 1
                        continue
                    self.pled.delivered(n, now, now - sent)
            elif t is EventReceived:
                ev = o.event
                if ev.kind == "bcast" and ev.seq > c.login_seq and ev.text.startswith(self.cfg.run_tag):
                    now = time.monotonic_ns()
                    self.bled.delivered(ev.seq, now, now - send_ns_of(ev.text), from_dealer)
            elif t is EventsMissed:
                self.bled.missed_ranges += 1
            elif t is SessionEnded:
                self._session_ended(c, o.reason)
            elif t is BrokerLost:
                self.broker_lost += 1

    def _reply(self, c: _Client, o: ReplyReceived) -> None:
        n = c.reqs.pop(o.req, None)
        if n is None:
            if o.type == b"login" and o.req == c.login_req:
                self._login_reply(c, o)
            return
        c.inflight -= 1
        self.inflight_total -= 1
        body = o.body
        if n >= 0:
            if body.get("status") == "ok":
                self.pled.acked(n)
            else:
                self.pled.failed(n, str(body.get("code", "error")))
        else:
            if body.get("status") == "ok":
                self.bled.acked(-1 - n, int(body.get("seq", 0)))
            else:
                self.bled.failed(-1 - n, str(body.get("code", "error")))
        if self.sending and self.refill and c.alive:
            now = time.monotonic_ns()
            while c.inflight < self.cfg.window:
                self._send_one(c, now)

    def _session_ended(self, c: _Client, reason: str) -> None:
        self.sessions_ended[reason] = self.sessions_ended.get(reason, 0) + 1
        if c.alive:
            c.alive = False
            self.active = [x for x in self.active if x is not c]

    def _tick_all(self) -> None:
        for c in self.clients:
            if c.dealer is None:
                continue
            outs = c.core.tick()
            if outs:
                self._outputs(c, outs, True)
            self._flush(c)

    def _housekeeping(self, now_s: float) -> None:
        if now_s >= self.next_tick:
            self.next_tick = now_s + TICK_S
            self._tick_all()

    # ---- login phase -------------------------------------------------------------------------

    def _open(self, c: _Client) -> None:
        """Connect the client's DEALER (just before its first login: a broker cuts connections that
        stay silent without logging in for --login-timeout seconds, and a login sent just as its
        connection is cut would be lost)."""
        cfg = self.cfg
        c.dealer = open_dealer(self.ctx, endpoint(cfg.address, cfg.port, cfg.ipv6), cfg.ipv6, keys=c.keys)
        self.poller.register(c.dealer, zmq.POLLIN)
        self.owner[c.dealer] = (c, False)

    def _start_login(self, c: _Client) -> None:
        if c.dealer is None:
            self._open(c)
        c.login_t0 = time.monotonic_ns()
        if not self.login.first_ns:
            self.login.first_ns = c.login_t0
        c.login_req = c.core.request(m.Login(req=0, version=PROTOCOL_VERSION, user=c.name, password=self.cfg.password))
        self._flush(c)

    def _login_reply(self, c: _Client, o: ReplyReceived) -> None:
        now = time.monotonic_ns()
        c.login_req = 0
        if o.ok and c.core.session is not None:
            self.login.ok += 1
            self.login.last_ns = now
            self.login_hist.record_value(max(1, (now - c.login_t0) // 1000))
            s = c.core.session
            c.login_seq = s.seq
            c.alive = True
            self.active.append(c)
            self.bled.add_subscriber(s.seq)
            c.sub = open_sub(self.ctx, endpoint(self.cfg.address, s.pub_port, self.cfg.ipv6), self.cfg.ipv6,
                             keys=c.keys, topics=c.core.sub_topics())
            self.poller.register(c.sub, zmq.POLLIN)
            self.owner[c.sub] = (c, True)
            c.core.sub_opened()
        elif o.code == ErrorCode.OVERLOADED.value:
            self.login.retries += 1
            self._retry.append((time.monotonic() + RETRY_DELAY_S, c))
        else:
            code = o.code or "error"
            self.login.failed[code] = self.login.failed.get(code, 0) + 1

    def _login_phase(self) -> None:
        cfg = self.cfg
        todo: deque[_Client] = deque(self.clients)
        deadline = time.monotonic() + cfg.login_timeout
        last_report = 0.0
        total = len(self.clients)

        def in_flight() -> list[_Client]:
            return [c for c in self.clients if c.login_req]

        flying = 0
        while True:
            now = time.monotonic()
            while self._retry and self._retry[0][0] <= now:
                todo.appendleft(self._retry.popleft()[1])
            flying = sum(1 for c in self.clients if c.login_req)
            while todo and flying < cfg.login_parallel:
                self._start_login(todo.popleft())
                flying += 1
            if not todo and not flying and not self._retry:
                break
            if now >= deadline:
                break
            self._poll(10)
            now = time.monotonic()
            for c in in_flight():
                if now - c.login_t0 / _NS > LOGIN_REPLY_TIMEOUT_S:
                    c.core.forget(c.login_req)
                    c.login_req = 0
                    self.login.failed["timeout"] = self.login.failed.get("timeout", 0) + 1
            self._housekeeping(now)
            if now - last_report >= 0.2:
                last_report = now
                done = self.login.ok + sum(self.login.failed.values())
                self._send(("login", done, self.login.ok, total))
        left = len(todo) + len(self._retry) + len(in_flight())
        for c in in_flight():
            c.core.forget(c.login_req)
            c.login_req = 0
        if left:
            self.login.failed["timeout"] = self.login.failed.get("timeout", 0) + left
        self.login.latency = self.login_hist.encode()
        self._send(("login", self.login.ok + sum(self.login.failed.values()), self.login.ok, total))

    # ---- run phase ---------------------------------------------------------------------------

    def _send_one(self, c: _Client, now: int) -> None:
        cfg = self.cfg
        if cfg.broadcast_ratio and self.rng.random() < cfg.broadcast_ratio:
            n = self.bled.new_message()
            head = f"{self.btag}{n:x}"
            text = make_text(head, now, cfg.size, self.pad)
            req = c.core.request(m.Broadcast(req=0, id=head, text=text))
            c.reqs[req] = -1 - n
        else:
            active = self.active
            rcpt = active[self.rng.randrange(len(active))]
            if rcpt is c and len(active) > 1:
                rcpt = active[self.rng.randrange(len(active))]
            n = self.pled.new_message()
            head = f"{self.ptag}{n:x}"
            text = make_text(head, now, cfg.size, self.pad)
            req = c.core.request(m.Send(req=0, id=head, to=[rcpt.name], text=text))
            c.reqs[req] = n
        c.inflight += 1
        self.inflight_total += 1
        sec = (now - self.start_ns) // _NS
        sps = self.sent_per_second
        while len(sps) <= sec:
            sps.append(0)
        sps[sec] += 1

    def _progress(self) -> None:
        """Send counters, rates over the last RATE_WINDOW_S (per second) and last-second p99s."""
        now = time.monotonic_ns()
        self.pled.latency.roll_to(now)
        self.bled.latency.roll_to(now)
        sent = len(self.pled.state) + self.bled.sent
        pdel, bdel = self.pled.n_delivered, self.bled.n_delivered
        samples = self._samples
        samples.append((now, sent, pdel, bdel))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S * _NS:
            samples.popleft()
        t0, sent0, p0, b0 = samples[0]
        dt = (now - t0) / _NS
        self._send(("progress", {
            "private_sent": len(self.pled.state),
            "private_acked": self.pled.n_acked,
            "private_delivered": pdel,
            "broadcast_sent": self.bled.sent,
            "broadcast_acked": len(self.bled.acked_seqs),
            "broadcast_delivered": bdel,
            "errors": self.pled.n_failed + self.bled.n_failed,
            "inflight": self.inflight_total,
            "send_rate": (sent - sent0) / dt if dt > 0 else 0.0,
            "private_rate": (pdel - p0) / dt if dt > 0 else 0.0,
            "broadcast_rate": (bdel - b0) / dt if dt > 0 else 0.0,
            "private_p99_ms": self.pled.latency.last_second_p99(),
            "broadcast_p99_ms": self.bled.latency.last_second_p99(),
        }))

    def _run_phase(self) -> None:
        cfg = self.cfg
        # wait for the start signal, keeping the sessions alive meanwhile
        while True:
            msg = self._take("start")
            if msg is not None:
                break
            self._poll(TICK_S * 1000)
            self._housekeeping(time.monotonic())
        _, self.start_ns, self.end_ns = msg
        self.pled.latency = LatencyRecorder(self.start_ns)
        self.bled.latency = LatencyRecorder(self.start_ns)
        while time.monotonic_ns() < self.start_ns:
            self._poll(min(TICK_S, (self.start_ns - time.monotonic_ns()) / _NS) * 1000)
            self._housekeeping(time.monotonic())
        self.sending = bool(self.active)
        now = time.monotonic_ns()
        self._samples.append((now, 0, 0, 0))
        if self.refill and self.sending:
            for c in list(self.active):
                while c.inflight < cfg.window:
                    self._send_one(c, now)
                self._flush(c)
        per_ns = (cfg.rate or 0.0) * len(self.active) / _NS
        scheduled = 0
        rr = 0
        self.next_progress = time.monotonic() + PROGRESS_S
        while True:
            now = time.monotonic_ns()
            if now >= self.end_ns:
                break
            if per_ns and self.active:
                due = int((now - self.start_ns) * per_ns) - scheduled
                if due > 0:
                    scheduled += due
                    active = self.active
                    k = len(active)
                    touched = []
                    for _ in range(due):
                        for _ in range(k):
                            rr = (rr + 1) % k
                            c = active[rr]
                            if c.inflight < cfg.window:
                                break
                        else:
                            c = None
                        if c is None:
                            self.skipped += 1
                            continue
                        self._send_one(c, now)
                        touched.append(c)
                    for c in touched:
                        self._flush(c)
                timeout_ms = 1.0
            else:
                timeout_ms = min(TICK_S, (self.end_ns - now) / _NS) * 1000
            self._poll(timeout_ms)
            now_s = time.monotonic()
            self._housekeeping(now_s)
            if now_s >= self.next_progress:
                self.next_progress = now_s + PROGRESS_S
                self._progress()
        self.sending = False

    # ---- stop and drain ----------------------------------------------------------------------

    def _stop_phase(self) -> None:
        """Wait for the replies of every send (at most until end_ns + drain)."""
        deadline = self.end_ns + int(self.cfg.drain * _NS)
        while self.inflight_total > 0 and time.monotonic_ns() < deadline:
            self._poll(10)
            now_s = time.monotonic()
            self._housekeeping(now_s)
            if now_s >= self.next_progress:
                self.next_progress = now_s + PROGRESS_S
                self._progress()
        self._progress()
        self._send(("stopped", self.bled.max_seq))

    def _drain_phase(self) -> bool:
        """Wait for the deliveries; returns True when nothing was outstanding at the end."""
        while True:
            msg = self._take("drain")
            if msg is not None:
                break
            self._poll(10)
            self._housekeeping(time.monotonic())
        _, target, deadline = msg
        next_check = 0.0
        while True:
            now_s = time.monotonic()
            if now_s >= next_check:
                next_check = now_s + 0.1
                behind = [c for c in self.active if (c.core.last_seq or 0) < target]
                if self.inflight_total <= 0 and not behind and self.pled.undelivered_acked() == 0:
                    return True
                for c in behind:
                    if now_s * _NS >= c.next_catch_up:
                        c.next_catch_up = int((now_s + CATCH_UP_EVERY_S) * _NS)
                        c.core.catch_up()
                        self._flush(c)
            if time.monotonic_ns() >= deadline:
                return False
            self._poll(10)
            self._housekeeping(time.monotonic())
            if now_s >= self.next_progress:
                self.next_progress = now_s + PROGRESS_S
                self._progress()

    def _report(self, drained: bool) -> WorkerReport:
        return WorkerReport(
            worker=self.cfg.worker,
            clients=len(self.clients),
            logged_in=self.login.ok,
            login=self.login,
            private=self.pled.part(),
            broadcast=self.bled.part(),
            sent_per_second=self.sent_per_second,
            sessions_ended=dict(self.sessions_ended),
            broker_lost=self.broker_lost,
            skipped=self.skipped,
            bad_frames=self.bad_frames,
            start_ns=self.start_ns,
            end_ns=self.end_ns,
            drained=drained,
        )

    def _logout(self) -> None:
        """Close the SUBs, log every session out, wait briefly for the replies, close everything."""
        for c in self.clients:
            if c.sub is not None:
                self.poller.unregister(c.sub)
                c.sub.close(0)
                c.sub = None
        waiting = set()
        for c in self.clients:
            if c.dealer is not None and c.core.session is not None:
                c.core.request(m.Logout(req=0))
                self._flush(c)
                waiting.add(c)
        deadline = time.monotonic() + LOGOUT_WAIT_S
        while waiting and time.monotonic() < deadline:
            self._poll(20)
            waiting = {c for c in waiting if c.core.session is not None}

    def close(self) -> None:
        """Close every socket (linger 0) and the context. Idempotent."""
        for c in self.clients:
            for sock in (c.sub, c.dealer):
                if sock is not None:
                    sock.close(0)
            c.sub = c.dealer = None
        self.ctx.term()

    def run(self) -> None:
        """Every phase, in order; the report goes to the parent before the logouts."""
        self._login_phase()
        self._send(("ready", self.login.ok, dict(self.login.failed)))
        self._run_phase()
        self._stop_phase()
        drained = self._drain_phase()
        self._progress()
        self._send(("report", self._report(drained)))
        self._logout()


def worker_main(cfg: WorkerConfig, control: Any) -> None:
    """Run a LoadWorker on an open control Connection; report failures on it; close it at the end."""
    raise_fd_limit()
    worker = None
    try:
        worker = LoadWorker(cfg, control)
        worker.run()
    except (ParentGone, KeyboardInterrupt):
        pass
    except BaseException:  # report anything else to the parent, then exit
        try:
            control.send(("error", traceback.format_exc()))
        except Exception:
            pass
    finally:
        if worker is not None:
            try:
                worker.close()
            except Exception:
                pass
        try:
            control.close()
        except Exception:
            pass


def main(argv: list[str] | None = None) -> int:
    """`python -m loadtest.worker FD`: FD is this process's end of a socketpair; the first object
    received on it is the WorkerConfig. Returns 0 (failures are reported on the pipe)."""
    import sys
    from multiprocessing.connection import Connection

    from zmq_chat.loadtest import worker as this  # run the package module's code, not a __main__ copy

    args = sys.argv[1:] if argv is None else argv
    control = Connection(int(args[0]))
    try:
        cfg = control.recv()
    except (EOFError, OSError):
        return 0
    this.worker_main(cfg, control)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
