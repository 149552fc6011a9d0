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
an ok `login` reply; tracks the PUB sequence number (drops duplicates, holds events that arrive
after a gap and repairs the gap with a `history` request); deduplicates private messages by id and
batches their acks; queues a `ping` when nothing was sent for `heartbeat_interval` seconds; reports
the broker lost when a request stays unanswered for `heartbeat_timeout` seconds.

Units: times are seconds from the injected monotonic `clock`; `ts` fields are broker wall-clock
seconds since the epoch (only passed through).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import msgspec

from protocol import messages as m
from protocol.errors import ErrorCode, ProtocolError
from protocol.wire import (
    END, MSG, REPLY, TOPIC_BCAST, TOPIC_HEARTBEAT, TOPIC_PRESENCE, TYPE_OF, WELCOME_PREFIX, decode_event,
    decode_events, decode_push, encode_request,
)

_mark_decoder = msgspec.json.Decoder(m.PubMark)


def decode_mark(frames: list[bytes]) -> m.PubMark:
    """Decode a PUB heartbeat or welcome `[topic, {"seq", "ts"}]`. Raises ProtocolError."""
    if len(frames) != 2:
        raise ProtocolError(ErrorCode.FRAMES, f"a PUB message has 2 frames [topic, body], got {len(frames)}")
    try:
        return _mark_decoder.decode(frames[1])
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_FIELD, str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_JSON, "the body is not a UTF-8 JSON object") from None

MAX_ACK_IDS = 1000
"""The protocol accepts at most 1000 ids in one `ack`."""

MAX_FUTILE_HISTORY = 3
"""History replies in a row that may end before the held events before the gap is skipped."""

WELCOME_TIMEOUT = 3.0
"""Seconds after opening the SUB without the broker's welcome before the catch-up is asked anyway."""

RETRY_CODES = frozenset({ErrorCode.OVERLOADED.value, "E_RATE_LIMITED"})
"""Error codes after which an internal history request is asked again after `retry_after` seconds."""


@dataclass(frozen=True)
class ReplyReceived:
    """The reply to a request made with `ClientCore.request`.

    Fields: req (int, the request id), type (bytes, the request type, e.g. b"send"), body (dict, the
    decoded reply: "req", "status" "ok"|"error", errors add "code" and "message").
    """

    req: int
    type: bytes
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True for status "ok"."""
        return self.body.get("status") == "ok"

    @property
    def code(self) -> str:
        """The error code string (e.g. "E_UNKNOWN_USER"), "" for an ok reply."""
        return str(self.body.get("code", ""))

    @property
    def message(self) -> str:
        """The broker's error message, "" for an ok reply."""
        return str(self.body.get("message", ""))


@dataclass(frozen=True)
class MessageReceived:
    """A private message seen for the first time in this session; its ack is already queued."""

    message: m.PrivateMessage


@dataclass(frozen=True)
class EventReceived:
    """A broadcast or presence event, delivered once and in sequence order.

    `catchup` is True when the event happened before this session's login (seq <= login seq), i.e.
    it was fetched by the catch-up `history` ("while you were away").
    """

    event: m.Event
    catchup: bool = False


@dataclass(frozen=True)
class EventsMissed:
    """Events after seq `after` and before seq `resumed` are gone from the broker (pruned history)."""

    after: int
    resumed: int


@dataclass(frozen=True)
class SessionEnded:
    """The session is over: an `end` push (reason replaced | idle_timeout | heartbeat_timeout |
    shutdown) or reason "not_logged_in" when the broker answered E_NOT_LOGGED_IN to a request made
    in a session (the broker restarted or forgot it). `message` is prose for the user."""

    reason: str
    message: str


@dataclass(frozen=True)
class BrokerLost:
    """A request has waited `waited` seconds (more than heartbeat_timeout) for its reply."""

    waited: float


Output = Union[ReplyReceived, MessageReceived, EventReceived, EventsMissed, SessionEnded, BrokerLost]
"""What `receive_dealer`, `receive_event` and `tick` return, in the order things happened."""


@dataclass
class Session:
    """Session parameters from the ok `login` reply (see the contract): user (str), pub_port (int),
    seq (int, newest event seq at login), since (int, catch-up start), since_ts (float, epoch s),
    heartbeat_interval / heartbeat_timeout / idle_timeout (float seconds), max_message_chars (int)."""

    user: str
    pub_port: int
    seq: int
    since: int
    since_ts: float = 0.0
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 15.0
    idle_timeout: float = 1800.0
    max_message_chars: int = 1000
    pub_heartbeat: float = 2.0

    @classmethod
    def from_reply(cls, body: dict[str, Any]) -> "Session":
        """Build from an ok login reply dict. Raises ProtocolError(E_BAD_FIELD) if a field is bad."""
        try:
            return cls(
                user=str(body["user"]),
                pub_port=int(body["pub_port"]),
                seq=int(body.get("seq", 0)),
                since=int(body.get("since", body.get("seq", 0))),
                since_ts=float(body.get("since_ts", 0.0)),
                heartbeat_interval=float(body.get("heartbeat_interval", 5.0)),
                heartbeat_timeout=float(body.get("heartbeat_timeout", 15.0)),
                idle_timeout=float(body.get("idle_timeout", 1800.0)),
                max_message_chars=int(body.get("max_message_chars", 1000)),
                pub_heartbeat=float(body.get("pub_heartbeat", 2.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"bad login reply: {exc!r}") from None


@dataclass
class _Pending:
    type: bytes
    sent_at: float
    purpose: str = ""  # "" for the caller's requests; "ack", "ping", "history" for internal ones
    ids: list[int] = field(default_factory=list)  # ack: the ids sent


@dataclass
class _SeqState:
    last: int  # every event with seq <= last has been delivered or is gone
    login_seq: int
    held: dict[int, m.Event] = field(default_factory=dict)  # arrived after a gap, by seq
    history_req: int | None = None  # the history request in flight, if any
    futile: int = 0  # history replies in a row that ended before the held events
    sub_opened: float | None = None  # when the SUB was opened (waiting for the welcome)
    caught_up: bool = False  # the catch-up history was asked
    retry_at: float | None = None  # ask history again at this time (after E_OVERLOADED)


class ClientCore:
    """Protocol state machine of one client connection (at most one session at a time).

    Args:
        clock: monotonic time source in seconds (inject a fake for tests).
        ack_batch: send an `ack` as soon as this many message ids are queued (1..1000).
        ack_delay: otherwise send queued acks this many seconds after the first was queued.
        history_limit: `limit` of every `history` request (1..10000).
        max_held: most out-of-order events held while a gap is repaired; later ones are dropped
            (they are fetched again by the next repair).
    Attributes:
        session: the Session of the logged-in user, or None.
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
        self._seq: _SeqState | None = None
        self._seen_msgs: set[int] = set()
        self._ack_queue: dict[int, None] = {}  # ordered set
        self._ack_since: float | None = None
        self.welcome_topic = WELCOME_PREFIX + os.urandom(16).hex().encode("ascii")

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
            ReplyReceived for replies to `request` calls (replies to internal ack/ping/history
            requests and replies nobody waits for any more are consumed); MessageReceived for a new
            private message; EventReceived / EventsMissed from a history reply; SessionEnded.
        Raises:
            ProtocolError: the frames are not a chat broker message (see protocol.wire.decode_push).
        """
        kind, body = decode_push(frames)
        if kind == REPLY:
            return self._on_reply(body)
        if kind == MSG:
            return self._on_msg(body)
        if kind == END:
            self._end_session()
            return [SessionEnded(body.reason, body.message)]
        return []  # pragma: no cover - decode_push accepts only the three kinds

    def receive_event(self, frames: list[bytes]) -> list[Output]:
        """Feed one multipart message received on the SUB ([topic, Event]).

        Returns:
            EventReceived for each event now deliverable in order (none for a duplicate or for an
            event held behind a gap; a gap queues a `history` request).
        Raises:
            ProtocolError: the frames are not an Event.
        """
        topic = bytes(frames[0]) if frames else b""
        if topic == TOPIC_HEARTBEAT or topic == self.welcome_topic:
            mark = decode_mark(frames)
            if self._seq is None:
                return []
            return self._on_welcome(mark.seq) if topic == self.welcome_topic else self._on_pub_heartbeat(mark.seq)
        if topic.startswith(WELCOME_PREFIX):
            return []  # someone else's welcome (a subscription to a prefix of it): not ours
        event = decode_event(frames)
        if self._seq is None:
            return []
        return self._accept_event(event)

    def sub_topics(self) -> list[bytes]:
        """The topics to subscribe the SUB to: bcast, presence, hb and this client's welcome topic."""
        return [TOPIC_BCAST, TOPIC_PRESENCE, TOPIC_HEARTBEAT, self.welcome_topic]

    def sub_opened(self) -> None:
        """The SUB was opened and subscribed: the catch-up `history` is asked when the broker's
        welcome arrives (the subscription is then active, so no event falls between the two), or
        after WELCOME_TIMEOUT seconds without it."""
        if self._seq is not None:
            self._seq.sub_opened = self._clock()

    def _on_welcome(self, seq: int) -> list[Output]:
        assert self._seq is not None
        if not self._seq.caught_up:
            self.catch_up()
        return []

    def _on_pub_heartbeat(self, seq: int) -> list[Output]:
        """A PUB heartbeat says the newest seq is `seq`: events up to it that never came were lost
        (e.g. the last one before a quiet period): repair now rather than at the next event."""
        st = self._seq
        assert st is not None
        if st.caught_up and seq > st.last and st.history_req is None and st.retry_at is None:
            self._request_history()
        return []

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
        st = self._seq
        if st is not None:
            if not st.caught_up and st.sub_opened is not None and now - st.sub_opened >= WELCOME_TIMEOUT:
                self.catch_up()
            if st.retry_at is not None and now >= st.retry_at and st.history_req is None:
                st.retry_at = None
                self._request_history()
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
        st = self._seq
        if st is not None:
            if not st.caught_up and st.sub_opened is not None:
                due.append(st.sub_opened + WELCOME_TIMEOUT)
            if st.retry_at is not None:
                due.append(st.retry_at)
        return max(0.0, min(due) - now)

    # ---- session --------------------------------------------------------------------------

    def catch_up(self) -> int | None:
        """Queue the catch-up `history` request (after = login `since`); call it once the SUB socket
        is connected and subscribed. Returns the request id, or None without a session."""
        if self._seq is None:
            return None
        self._seq.caught_up = True
        if self._seq.history_req is None:
            self._request_history()
        return self._seq.history_req

    def end_session(self) -> None:
        """Forget the session (after logout, or when the caller gives up on it). Idempotent."""
        self._end_session()

    @property
    def last_seq(self) -> int | None:
        """The last event seq delivered in order (or skipped as gone); None without a session."""
        return self._seq.last if self._seq else None

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

    def _start_session(self, body: dict[str, Any]) -> None:
        self.session = Session.from_reply(body)
        self._seq = _SeqState(last=self.session.since, login_seq=self.session.seq)
        self._seen_msgs = set()
        self._ack_queue = {}
        self._ack_since = None
        self._lost_reported = False

    def _end_session(self) -> None:
        self.session = None
        self._seq = None
        self._ack_queue = {}
        self._ack_since = None
        self._pending = {r: p for r, p in self._pending.items() if p.purpose == ""}

    def _on_reply(self, body: dict[str, Any]) -> list[Output]:
        req = body.get("req")
        pending = self._pending.pop(req, None) if isinstance(req, int) else None
        if pending is None:
            return []  # stray: its waiter gave up, or an error reply without a readable id
        out: list[Output] = []
        assert isinstance(req, int)
        self._expire_overtaken(req)
        ok = body.get("status") == "ok"
        session_gone = (
            not ok and body.get("code") == ErrorCode.NOT_LOGGED_IN.value
            or ok and pending.type == b"ping" and body.get("session") is False
        )
        if session_gone and self.session is not None and pending.type not in (b"login", b"register", b"hello"):
            self._end_session()
            out.append(SessionEnded("not_logged_in", "the broker no longer knows this session"))
        if pending.purpose == "history":
            out.extend(self._on_history(req, body))
        elif pending.purpose == "":
            if ok and pending.type == b"login":
                self._start_session(body)
            elif ok and pending.type == b"logout":
                self._end_session()
            out.insert(0, ReplyReceived(req, pending.type, body))
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

    def _request_history(self) -> None:
        assert self._seq is not None
        self._seq.history_req = self._queue(m.History(req=0, after=self._seq.last, limit=self._history_limit), "history")

    def _deliver(self, event: m.Event) -> EventReceived:
        assert self._seq is not None
        self._seq.last = event.seq
        return EventReceived(event, catchup=event.seq <= self._seq.login_seq)

    def _drain_held(self) -> list[Output]:
        st = self._seq
        assert st is not None
        out: list[Output] = []
        while st.last + 1 in st.held:
            out.append(self._deliver(st.held.pop(st.last + 1)))
        for seq in [s for s in st.held if s <= st.last]:
            del st.held[seq]
        return out

    def _accept_event(self, event: m.Event) -> list[Output]:
        st = self._seq
        assert st is not None
        if event.seq <= st.last or event.seq in st.held:
            return []  # duplicate
        if event.seq == st.last + 1:
            return [self._deliver(event), *self._drain_held()]
        if len(st.held) < self._max_held:
            st.held[event.seq] = event
        if st.history_req is None:
            self._request_history()
        return []

    def _on_history(self, req: int, body: dict[str, Any]) -> list[Output]:
        st = self._seq
        if st is None or st.history_req != req:
            return []
        st.history_req = None
        out: list[Output] = []
        progressed = False
        if body.get("code") in RETRY_CODES:  # the broker asks to come back later: nothing is lost
            wait = body.get("retry_after", 1.0)
            st.retry_at = self._clock() + (float(wait) if isinstance(wait, (int, float)) else 1.0)
            return out
        if body.get("status") == "ok":
            try:
                events = sorted(decode_events(body.get("events", [])), key=lambda e: e.seq)
            except ProtocolError:
                events = []
            for event in events:
                if event.seq <= st.last:
                    continue
                if event.seq > st.last + 1:
                    out.append(EventsMissed(st.last, event.seq))
                out.append(self._deliver(event))
                progressed = True
            out.extend(self._drain_held())
            newest = body.get("seq")
            if progressed and isinstance(newest, int) and st.last < newest:
                st.futile = 0
                self._request_history()  # the limit cut the page: fetch the next one
                return out
            if (
                st.held
                and isinstance(newest, int)
                and newest < min(st.held) - 1
                and st.futile < MAX_FUTILE_HISTORY
            ):
                # The missing events are newer than the broker's answer (it answered before they
                # were published): ask again rather than skip them.
                st.futile += 1
                self._request_history()
                return out
        st.futile = 0
        if st.held:  # what is still missing is gone: skip to the held events
            first = min(st.held)
            out.append(EventsMissed(st.last, first))
            st.last = first - 1
            out.extend(self._drain_held())
            if st.held and st.history_req is None:
                self._request_history()
        return out
