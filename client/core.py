"""Sans-IO protocol state of one chat client session (no zmq, no sockets, no asyncio).

The caller owns the sockets. It hands every multipart message it receives to `ClientCore` and
sends whatever `ClientCore.data_to_send()` returns on the DEALER, in order:

    core = ClientCore()
    req = core.request(m.Hello(req=0, version=PROTOCOL_VERSION))  # req id allocated here
    for frames in core.data_to_send():
        dealer.send_multipart(frames)
    outputs = core.receive_dealer(dealer.recv_multipart())       # -> [ReplyReceived(...), ...]
    outputs = core.receive_event(sub.recv_multipart())           # -> [EventReceived(...), ...]
    outputs = core.tick()                                        # acks, pings, lost detection

What the core does: allocates request ids and matches replies to them; starts the session state on
an ok `login` reply; tracks the PUB sequence number (client.sequence: drops duplicates, holds
events that arrive after a gap and repairs the gap with a `history` request, asks the catch-up
after the broker's welcome); deduplicates private messages by id and
batches their acks; queues a `ping` when nothing was sent for `heartbeat_interval` seconds; reports
the broker lost when a request stays unanswered for `heartbeat_timeout` seconds.

Units: times are seconds from the injected monotonic `clock`; `ts` fields are broker wall-clock
seconds since the epoch (only passed through).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from zmq_chat.client.outputs import (  # noqa: F401 (re-exported: the drivers import them from here)
    BrokerLost, EpochChanged, EventReceived, EventsMissed, MessageReceived, Output, ReplyReceived, Session,
    SessionEnded,
)
from zmq_chat.client.sequence import EventSequence, _SeqState, decode_mark  # noqa: F401
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode, ProtocolError
from zmq_chat.protocol.limits import MAX_ACK_IDS
from zmq_chat.protocol.replies import ErrorReply, LoginReply, PingReply, decode_head, decode_reply
from zmq_chat.protocol.wire import END, MSG, REPLY, TYPE_OF, decode_push, encode_request


@dataclass
class _Pending:
    type: bytes
    sent_at: float
    purpose: str = ""  # "" for the caller's requests; "ack", "ping", "history" for internal ones
    ids: list[int] = field(default_factory=list)  # ack: the ids sent


@dataclass
class _Resume:
    """What a session lost with its broker leaves for the next login of the same user (failover):
    user, last (event seq delivered in order), seen (private message ids shown), acks (ids not
    confirmed acked: queued or in flight)."""

    user: str
    last: int
    seen: set[int]
    acks: list[int]


class ClientCore(EventSequence):
    """Protocol state machine of one client connection (at most one session at a time).

    Args:
        clock: monotonic time source in seconds (inject a fake for tests).
        ack_batch: send an `ack` as soon as this many message ids are queued (1..1000).
        ack_delay: otherwise send queued acks this many seconds after the first was queued.
        history_limit: `limit` of every `history` request (1..10000).
        max_held: most out-of-order events held while a gap is repaired; later ones are dropped
            (they are fetched again by the next repair).
    Attributes:
        session: the Session (the ok login reply, protocol.replies.LoginReply) of the logged-in
            user, or None.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        ack_batch: int = 100,
        ack_delay: float = 0.1,
        history_limit: int = 1000,
        max_held: int = 10_000,
    ) -> None:
        self._clock = clock
        self._ack_batch = max(1, min(ack_batch, MAX_ACK_IDS))
        self._ack_delay = ack_delay
        self._history_limit = history_limit
        self._max_held = max_held
        self._next_req = 1
        self._pending: dict[int, _Pending] = {}
        self._outbox: list[list[bytes]] = []
        self._last_sent = clock()
        self._lost_reported = False
        self.session: Session | None = None
        self._seen_msgs: set[int] = set()
        self._ack_queue: dict[int, None] = {}  # ordered set
        self._ack_since: float | None = None
        self._epoch = ""  # the event log's epoch at the last login in this process ("" unknown)
        self._resume: _Resume | None = None
        self._init_sequence()

    # ---- requests -------------------------------------------------------------------------

    def request(self, msg: m.Request) -> int:
        """Queue a request; its `req` field is overwritten with a fresh request id.

        Args:
            msg: any protocol.messages Request instance (e.g. m.Who(req=0)).
        Returns:
            the request id (int); the matching reply comes out of `receive_dealer` as ReplyReceived.
        Raises:
            KeyError: msg is not a request type of protocol.wire.
        """
        return self._queue(msg, "")

    def _queue(self, msg: m.Request, purpose: str) -> int:
        req = self._next_req
        self._next_req += 1
        msg.req = req
        frames = encode_request(msg)
        ids = list(msg.ids) if isinstance(msg, m.Ack) else []
        self._pending[req] = _Pending(TYPE_OF[type(msg)], self._clock(), purpose, ids)
        self._outbox.append(frames)
        return req

    def forget(self, req: int) -> None:
        """Stop waiting for the reply of `req` (the caller gave up); a late reply is then ignored."""
        self._pending.pop(req, None)

    def data_to_send(self) -> list[list[bytes]]:
        """Take the queued request frames ([type, body] each) to send on the DEALER, in order.

        Call after `request`, `receive_*` and `tick`. Counts as "sent now" for the heartbeat.
        """
        out, self._outbox = self._outbox, []
        if out:
            self._last_sent = self._clock()
        return out

    def pending_count(self) -> int:
        """Number of requests (the caller's and internal ones) still waiting for a reply."""
        return len(self._pending)

    # ---- receiving ------------------------------------------------------------------------

    def receive_dealer(self, frames: list[bytes]) -> list[Output]:
        """Feed one multipart message received on the DEALER ([kind, body]).

        Returns:
            ReplyReceived for replies to `request` calls, carrying the typed reply
            (protocol.replies; replies to internal ack/ping/history requests and replies nobody
            waits for any more are consumed); MessageReceived for a new private message;
            EventReceived / EventsMissed from a history reply; SessionEnded.
        Raises:
            ProtocolError: the frames are not a chat broker message (see protocol.wire.decode_push),
                or a reply is malformed (protocol.replies.decode_reply): the request it answers is
                then forgotten (its waiter times out; an internal history is asked again later).
        """
        if len(frames) == 2 and bytes(frames[0]) == REPLY:
            return self._on_reply(frames[1])
        kind, body = decode_push(frames)
        if kind == MSG:
            return self._on_msg(body)
        if kind == END:
            self._end_session()
            return [SessionEnded(body.reason, body.message)]
        return []  # pragma: no cover - decode_push accepts only the three kinds

    def tick(self) -> list[Output]:
        """Do what is due by time: flush batched acks, queue a heartbeat `ping`, detect a lost broker.

        Returns:
            [BrokerLost] once, when some request has waited more than heartbeat_timeout in a
            session; otherwise [].
        """
        now = self._clock()
        if self._ack_queue and (self._ack_since is None or now - self._ack_since >= self._ack_delay):
            self._flush_acks()
        if self.ping_due():
            self._queue(m.Ping(req=0), "ping")
        self._sequence_tick(now)
        waited = self.oldest_pending_age()
        if self.session and waited > self.session.heartbeat_timeout and not self._lost_reported:
            self._lost_reported = True
            return [BrokerLost(waited)]
        return []

    def ping_due(self) -> bool:
        """True in a session when nothing was sent for heartbeat_interval seconds (also when an
        earlier ping still waits: it may have been lost with a dropped TCP connection)."""
        if self.session is None or self._outbox:  # something is about to be sent anyway
            return False
        return self._clock() - self._last_sent >= self.session.heartbeat_interval

    def oldest_pending_age(self) -> float:
        """Seconds the oldest unanswered request has waited (0.0 when none waits)."""
        if not self._pending:
            return 0.0
        return self._clock() - min(p.sent_at for p in self._pending.values())

    def next_timeout(self) -> float:
        """Seconds until `tick` may have something to do (>= 0; 1.0 when nothing is scheduled)."""
        now = self._clock()
        due = [now + 1.0]
        if self._ack_queue:
            due.append((self._ack_since or now) + self._ack_delay)
        if self.session:
            due.append(self._last_sent + self.session.heartbeat_interval)
            if self._pending:
                due.append(min(p.sent_at for p in self._pending.values()) + self.session.heartbeat_timeout)
        due.extend(self._sequence_due())
        return max(0.0, min(due) - now)

    # ---- session --------------------------------------------------------------------------

    def end_session(self) -> None:
        """Forget the session (after logout, or when the caller gives up on it). Idempotent."""
        self._end_session()

    def lose_session(self) -> None:
        """The broker of the session stopped answering and the caller moves to another one
        (failover): remember what the next login of the same user resumes from (the last event
        seq, the private message ids shown, the acks not confirmed), then forget the session and
        every request in flight (the caller fails their waiters; a send is retried with the same
        id). Without a session, only the requests are forgotten (an earlier loss stays
        remembered). The next ok login of that user catches up with `history` from the
        remembered seq instead of the reply's `since`, unless its epoch changed (EpochChanged)."""
        if self.session is not None and self._seq is not None:
            acks = [*self._ack_queue, *(i for p in self._pending.values() if p.purpose == "ack" for i in p.ids)]
            self._resume = _Resume(self.session.user, self._seq.last, self._seen_msgs, acks)
        self._end_session()
        self._pending = {}
        self._outbox = []

    @property
    def epoch(self) -> str:
        """The event log's epoch of the last ok login in this process ("" before, or from a broker
        without epochs)."""
        return self._epoch

    def queued_acks(self) -> list[int]:
        """Message ids waiting to be acked (in arrival order)."""
        return list(self._ack_queue)

    def flush_acks(self) -> list[int]:
        """Queue `ack` requests for every message id waiting to be acked, as the caller's own
        requests: their replies come out of `receive_dealer` as ReplyReceived. Call before
        `logout` and wait for those replies, so the messages shown in this session leave the
        mailbox and are not shown again at the next login. Returns the request ids."""
        ids = list(self._ack_queue)
        self._ack_queue = {}
        self._ack_since = None
        return [self._queue(m.Ack(req=0, ids=ids[i:i + MAX_ACK_IDS]), "")
                for i in range(0, len(ids), MAX_ACK_IDS)]

    # ---- internals ------------------------------------------------------------------------

    def _start_session(self, reply: LoginReply) -> list[Output]:
        """Open the session of an ok login reply. Where the event sequence starts (docs 9.4):
        a new epoch (another log than at the last login in this process): at the reply's seq,
        reporting EpochChanged; resuming a lost session of the same user (lose_session): at its
        last seq (at most the reply's seq), keeping the ids shown and the acks owed; otherwise at
        the reply's `since`."""
        if reply.dup and self.session is not None and self.session.user == reply.user:
            self.session = reply  # a retried login answered again: the session goes on as it is
            return []
        old, resume, self._resume = self._epoch, self._resume, None
        out: list[Output] = []
        seen: set[int] = set()
        self._ack_queue = {}
        self._ack_since = None
        if reply.epoch and old and reply.epoch != old:
            last = reply.seq
            out.append(EpochChanged(old, reply.epoch, reply.seq))
        elif resume is not None and resume.user == reply.user:
            last = min(resume.last, reply.seq)
            seen = resume.seen
            for mid in resume.acks:
                self._enqueue_ack(mid)
        else:
            last = reply.since
        if reply.epoch:
            self._epoch = reply.epoch
        self.session = reply
        self._seq = _SeqState(last=last, login_seq=reply.seq)
        self._seen_msgs = seen
        self._lost_reported = False
        return out

    def _end_session(self) -> None:
        self.session = None
        self._seq = None
        self._ack_queue = {}
        self._ack_since = None
        self._pending = {r: p for r, p in self._pending.items() if p.purpose == ""}

    def _on_reply(self, body: bytes) -> list[Output]:
        head = decode_head(body)
        req = head.req
        pending = self._pending.pop(req, None) if req is not None else None
        if pending is None:
            return []  # stray: its waiter gave up, or an error reply without a readable id
        assert req is not None
        self._expire_overtaken(req)
        try:
            reply = decode_reply(pending.type, body, head)
        except ProtocolError:
            if pending.purpose == "history":
                self._history_failed(req)
            raise
        out: list[Output] = []
        session_gone = (
            isinstance(reply, ErrorReply) and reply.code == ErrorCode.NOT_LOGGED_IN
            or isinstance(reply, PingReply) and not reply.session
        )
        if session_gone and self.session is not None and pending.type not in (b"login", b"register", b"hello"):
            self._end_session()
            out.append(SessionEnded("not_logged_in", "the broker no longer knows this session"))
        if pending.purpose == "history":
            out.extend(self._on_history(req, reply))
        elif pending.purpose == "":
            if isinstance(reply, LoginReply):
                out.extend(self._start_session(reply))
            elif reply.ok and pending.type == b"logout":
                self._end_session()
            out.insert(0, ReplyReceived(req, pending.type, reply))
        return out

    def _expire_overtaken(self, req: int) -> None:
        """The broker answers ack/ping/history at once and in order, so an internal request older
        than `req` that is still unanswered was lost (e.g. with a dropped TCP connection): forget a
        ping, queue an ack's ids again, ask a history again."""
        for old in [r for r, p in self._pending.items() if r < req and p.purpose]:
            pending = self._pending.pop(old)
            if pending.purpose == "ack":
                for mid in pending.ids:
                    self._enqueue_ack(mid)
            elif pending.purpose == "history" and self._seq is not None and self._seq.history_req == old:
                self._request_history()

    def _enqueue_ack(self, mid: int) -> None:
        if mid not in self._ack_queue:
            if not self._ack_queue:
                self._ack_since = self._clock()
            self._ack_queue[mid] = None

    def _on_msg(self, msg: m.PrivateMessage) -> list[Output]:
        self._enqueue_ack(msg.id)
        if len(self._ack_queue) >= self._ack_batch:
            self._flush_acks()
        if msg.id in self._seen_msgs:
            return []
        self._seen_msgs.add(msg.id)
        return [MessageReceived(msg)]

    def _flush_acks(self) -> None:
        ids = list(self._ack_queue)
        self._ack_queue = {}
        self._ack_since = None
        for start in range(0, len(ids), MAX_ACK_IDS):
            self._queue(m.Ack(req=0, ids=ids[start : start + MAX_ACK_IDS]), "ack")
