"""The PUB side of a client session: event sequence numbers, the catch-up after login (asked once
the broker's welcome says the SUB is subscribed), gap repair with `history`, and the PUB heartbeat
that reveals a lost last event (docs/protocol.md 7.4, 9.4). A mixin of client.core.ClientCore:
it queues requests through the core's `_queue`; pure, no sockets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import msgspec

from zmq_chat.client.outputs import EventReceived, EventsMissed, Output
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode, ProtocolError
from zmq_chat.protocol.replies import UNSET, ErrorReply, HistoryReply, Reply
from zmq_chat.protocol.wire import TOPIC_BCAST, TOPIC_HEARTBEAT, TOPIC_PRESENCE, WELCOME_PREFIX, decode_event

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


MAX_FUTILE_HISTORY = 3
"""History replies in a row that may end before the held events before the gap is skipped."""

WELCOME_TIMEOUT = 3.0
"""Seconds after opening the SUB without the broker's welcome before the catch-up is asked anyway."""

RETRY_CODES = frozenset({ErrorCode.OVERLOADED.value, ErrorCode.RATE_LIMITED.value})
"""Error codes after which an internal history request is asked again after `retry_after` seconds."""


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


class EventSequence:
    """Event sequencing and gap repair; mixed into ClientCore, which provides `_queue`, `_clock`,
    `_history_limit` and `_max_held` (declared here) and calls `_init_sequence` for `_seq`."""

    _clock: Callable[[], float]  # monotonic seconds
    _history_limit: int  # `limit` of every history request
    _max_held: int  # most events held behind a gap

    def _queue(self, msg: m.Request, purpose: str) -> int:
        """Queue an internal request (`purpose` "history"); returns its request id. The host's."""
        raise NotImplementedError

    def _init_sequence(self) -> None:
        self._seq: _SeqState | None = None
        self.welcome_topic = WELCOME_PREFIX + os.urandom(16).hex().encode("ascii")

    def _sequence_tick(self, now: float) -> None:
        """Ask the catch-up when the welcome is overdue, and a history refused for a while again."""
        st = self._seq
        if st is None:
            return
        if not st.caught_up and st.sub_opened is not None and now - st.sub_opened >= WELCOME_TIMEOUT:
            self.catch_up()
        if st.retry_at is not None and now >= st.retry_at and st.history_req is None:
            st.retry_at = None
            self._request_history()

    def _sequence_due(self) -> list[float]:
        """When `_sequence_tick` next has something to do."""
        st = self._seq
        if st is None:
            return []
        due = []
        if not st.caught_up and st.sub_opened is not None:
            due.append(st.sub_opened + WELCOME_TIMEOUT)
        if st.retry_at is not None:
            due.append(st.retry_at)
        return due

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

    def catch_up(self) -> int | None:
        """Queue the catch-up `history` request (after = login `since`); call it once the SUB socket
        is connected and subscribed. Returns the request id, or None without a session."""
        if self._seq is None:
            return None
        self._seq.caught_up = True
        if self._seq.history_req is None:
            self._request_history()
        return self._seq.history_req

    @property
    def caught_up(self) -> bool:
        """True once the login's catch-up is over: its `history` was asked and answered up to the
        login seq (events that were gone count as done); also True without a session."""
        st = self._seq
        if st is None:
            return True
        return st.caught_up and st.history_req is None and st.retry_at is None and st.last >= st.login_seq

    @property
    def last_seq(self) -> int | None:
        """The last event seq delivered in order (or skipped as gone); None without a session."""
        return self._seq.last if self._seq else None

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

    def _history_failed(self, req: int) -> None:
        """The reply to history request `req` was malformed: ask again in a second."""
        st = self._seq
        if st is not None and st.history_req == req:
            st.history_req = None
            st.retry_at = self._clock() + 1.0

    def _on_history(self, req: int, reply: Reply) -> list[Output]:
        st = self._seq
        if st is None or st.history_req != req:
            return []
        st.history_req = None
        out: list[Output] = []
        progressed = False
        if isinstance(reply, ErrorReply) and reply.code in RETRY_CODES:  # come back later: nothing is lost
            st.retry_at = self._clock() + (1.0 if reply.retry_after is UNSET else reply.retry_after)
            return out
        if isinstance(reply, HistoryReply):
            for event in sorted(reply.events, key=lambda e: e.seq):
                if event.seq <= st.last:
                    continue
                if event.seq > st.last + 1:
                    out.append(EventsMissed(st.last, event.seq))
                out.append(self._deliver(event))
                progressed = True
            out.extend(self._drain_held())
            newest = reply.seq
            if progressed and st.last < newest:
                st.futile = 0
                self._request_history()  # the limit cut the page: fetch the next one
                return out
            if (
                st.held
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
