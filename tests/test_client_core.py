"""Unit tests of client.core.ClientCore: pure, no sockets (frames are built with protocol.wire)."""

from __future__ import annotations

import msgspec
import pytest

from zmq_chat.client.core import (
    MAX_ACK_IDS,
    BrokerLost,
    EpochChanged,
    ClientCore,
    EventReceived,
    EventsMissed,
    MessageReceived,
    ReplyReceived,
    SessionEnded,
)
from zmq_chat.protocol import messages as m
from zmq_chat.protocol import replies as r
from zmq_chat.protocol import wire
from zmq_chat.protocol.errors import ErrorCode, ProtocolError

pytestmark = pytest.mark.timeout(60)


class Clock:
    """A fake monotonic clock: call it for the time, `advance(s)` to move it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sent(core: ClientCore) -> list[tuple[bytes, m.Request]]:
    """Decode what the core wants to send, as the broker would see it."""
    return [wire.decode_request(frames) for frames in core.data_to_send()]


def event(seq: int, kind: str = "bcast", user: str = "bob", text: str = "hi") -> m.Event:
    if kind == "bcast":
        return m.Event(seq=seq, ts=1.0e9 + seq, kind="bcast", user=user, text=text, cid=f"c{seq}")
    return m.Event(seq=seq, ts=1.0e9 + seq, kind="presence", user=user, event="login")


def seqs(outputs) -> list[int]:
    return [o.event.seq for o in outputs if isinstance(o, EventReceived)]


LOGIN = {"user": "alice", "pub_port": 5001, "seq": 10, "since": 7, "since_ts": 1.0e9,
         "heartbeat_interval": 5.0, "heartbeat_timeout": 15.0, "idle_timeout": 1800.0,
         "max_message_chars": 1000, "pub_heartbeat": 2.0, "dup": False, "epoch": "e1"}


def logged_in(clock: Clock | None = None, **kw) -> tuple[ClientCore, Clock]:
    """A core with an open session (login seq 10, since 7) and nothing left to send."""
    clock = clock or Clock()
    core = ClientCore(clock=clock, **kw)
    req = core.request(m.Login(req=0, version=1, user="alice", password="pw123456"))
    core.data_to_send()
    out = core.receive_dealer(wire.encode_ok(req, LOGIN))
    assert out == [ReplyReceived(req, b"login", r.LoginReply(req=req, **LOGIN))]
    assert core.session is not None and core.session.user == "alice"
    return core, clock


def answer_history(core: ClientCore, events: list[m.Event], newest: int) -> list:
    """Answer the one history request the core sent, with `events`."""
    reqs = [(t, r) for t, r in sent(core) if t == b"history"]
    assert len(reqs) == 1, reqs
    body = {"events": events, "seq": newest, "complete": True}
    return core.receive_dealer(wire.encode_ok(reqs[0][1].req, body))


# ---- request ids and reply matching -------------------------------------------------------


def test_request_ids_are_fresh_and_replies_match():
    core = ClientCore(clock=Clock())
    r1 = core.request(m.Who(req=0))
    r2 = core.request(m.Status(req=99))
    assert r1 != r2
    frames = sent(core)
    assert [(t, r.req) for t, r in frames] == [(b"who", r1), (b"status", r2)]
    assert core.pending_count() == 2
    # replies may come in any order
    status = r.StatusReply(req=r2, user="a", busy=False, busy_text="", hidden=True, since_ts=1.0)
    out = core.receive_dealer(wire.encode_ok(r2, {"user": "a", "busy": False, "busy_text": "", "hidden": True,
                                                  "since_ts": 1.0}))
    assert out == [ReplyReceived(r2, b"status", status)] and out[0].ok and out[0].code == out[0].message == ""
    out = core.receive_dealer(wire.encode_error(r1, ErrorCode.NOT_LOGGED_IN, "log in first"))
    assert len(out) == 1 and not out[0].ok and out[0].code == "E_NOT_LOGGED_IN"
    assert out[0].message == "log in first" and out[0].type == b"who"
    assert isinstance(out[0].body, r.ErrorReply) and out[0].body.code == ErrorCode.NOT_LOGGED_IN
    assert core.pending_count() == 0


def test_a_malformed_reply_raises_and_its_request_is_forgotten():
    core = ClientCore(clock=Clock())
    req = core.request(m.Who(req=0))
    with pytest.raises(ProtocolError) as info:
        core.receive_dealer(wire.encode_ok(req, {"users": "alice"}))
    assert info.value.code == ErrorCode.BAD_FIELD and core.pending_count() == 0
    with pytest.raises(ProtocolError):
        core.receive_dealer([wire.REPLY, b'{"status": "ok"}'])  # no req


def test_a_malformed_history_reply_is_asked_again_later():
    core, clock = logged_in()
    core.catch_up()
    ((_, hist),) = sent(core)
    with pytest.raises(ProtocolError):
        core.receive_dealer(wire.encode_ok(hist.req, {"events": [{"seq": 8}], "seq": 8, "complete": True}))
    core.tick()
    assert sent(core) == []
    clock.advance(1.0)
    core.tick()
    assert [(k, q.after) for k, q in sent(core)] == [(b"history", 7)]


def test_stray_and_forgotten_replies_are_ignored():
    core = ClientCore(clock=Clock())
    req = core.request(m.Who(req=0))
    core.forget(req)
    assert core.receive_dealer(wire.encode_ok(req, {"users": []})) == []
    assert core.receive_dealer(wire.encode_ok(12345, {})) == []
    assert core.receive_dealer(wire.encode_error(None, ErrorCode.BAD_JSON, "bad")) == []


def test_garbage_from_the_peer_raises_protocol_error():
    core = ClientCore(clock=Clock())
    with pytest.raises(ProtocolError):
        core.receive_dealer([b"HTTP/1.1 400 Bad Request"])
    with pytest.raises(ProtocolError):
        core.receive_dealer([b"reply", b"not json"])
    with pytest.raises(ProtocolError):
        core.receive_event([b"bcast", b"{}"])


def test_data_to_send_drains_in_order():
    core = ClientCore(clock=Clock())
    for _ in range(3):
        core.request(m.Ping(req=0))
    assert len(core.data_to_send()) == 3
    assert core.data_to_send() == []


# ---- sequence numbers ---------------------------------------------------------------------


def test_catch_up_asks_history_after_since_and_marks_catchup():
    core, _ = logged_in()
    assert core.last_seq == 7
    core.catch_up()
    out = answer_history(core, [event(8), event(9, "presence"), event(10), event(11)], newest=11)
    assert seqs(out) == [8, 9, 10, 11]
    assert [o.catchup for o in out] == [True, True, True, False]  # login seq was 10
    assert core.last_seq == 11


def test_in_order_events_and_duplicates_dropped():
    core, _ = logged_in()
    assert seqs(core.receive_event(wire.encode_event(event(8)))) == [8]
    assert seqs(core.receive_event(wire.encode_event(event(9)))) == [9]
    assert core.receive_event(wire.encode_event(event(9))) == []  # duplicate
    assert core.receive_event(wire.encode_event(event(3))) == []  # old
    assert sent(core) == []  # no gap, no history request
    assert core.last_seq == 9


def test_gap_holds_event_and_repairs_with_history():
    core, _ = logged_in()
    core.receive_event(wire.encode_event(event(8)))
    assert core.receive_event(wire.encode_event(event(11))) == []  # gap: 9, 10 missing
    assert core.receive_event(wire.encode_event(event(12))) == []  # still held
    assert core.receive_event(wire.encode_event(event(11))) == []  # duplicate of a held one
    reqs = sent(core)
    assert [(t, r.after) for t, r in reqs] == [(b"history", 8)]  # one request, after = last
    body = {"events": [event(9), event(10), event(11)], "seq": 12, "complete": True}
    out = core.receive_dealer(wire.encode_ok(reqs[0][1].req, body))
    assert seqs(out) == [9, 10, 11, 12]
    assert core.last_seq == 12
    assert sent(core) == []


def test_gap_filled_by_late_live_event_still_consumes_history_reply():
    core, _ = logged_in()
    core.receive_event(wire.encode_event(event(9)))  # gap at 8
    (req,) = [r.req for _, r in sent(core)]
    assert seqs(core.receive_event(wire.encode_event(event(8)))) == [8, 9]
    out = core.receive_dealer(wire.encode_ok(req, {"events": [event(8), event(9)], "seq": 9, "complete": True}))
    assert seqs(out) == []  # all duplicates by now


def test_pruned_history_reports_missed_events():
    core, _ = logged_in()
    core.receive_event(wire.encode_event(event(20)))  # gap 8..19
    body_events = [event(15), event(16), event(17), event(18), event(19)]  # 8..14 pruned
    out = answer_history(core, body_events, newest=20)
    assert out[0] == EventsMissed(after=7, resumed=15)
    assert seqs(out) == [15, 16, 17, 18, 19, 20]


def test_history_page_cut_by_limit_asks_for_the_next_page():
    core, _ = logged_in(history_limit=2)
    core.catch_up()
    out = answer_history(core, [event(8), event(9)], newest=12)
    assert seqs(out) == [8, 9]
    out = answer_history(core, [event(10), event(11)], newest=12)  # the core asked after=9
    assert seqs(out) == [10, 11]
    out = answer_history(core, [event(12)], newest=12)
    assert seqs(out) == [12]
    assert sent(core) == []


def test_history_error_skips_to_held_events():
    core, _ = logged_in()
    core.receive_event(wire.encode_event(event(10)))
    (req,) = [r.req for _, r in sent(core)]
    out = core.receive_dealer(wire.encode_error(req, ErrorCode.INTERNAL, "boom"))
    assert out[0] == EventsMissed(after=7, resumed=10)
    assert seqs(out) == [10]


def test_events_before_login_are_ignored():
    core = ClientCore(clock=Clock())
    assert core.receive_event(wire.encode_event(event(1))) == []


# ---- private messages and acks ------------------------------------------------------------


def msg(mid: int, text: str = "hi") -> list[bytes]:
    return wire.encode_msg(m.PrivateMessage(id=mid, sender="bob", to="alice", ts=1.0e9, text=text, cid=f"x{mid}"))


def acks(core: ClientCore) -> list[list[int]]:
    return [r.ids for t, r in sent(core) if t == b"ack"]


def test_acks_are_batched_after_a_delay():
    core, clock = logged_in(ack_delay=0.1)
    for mid in (1, 2, 3):
        (out,) = core.receive_dealer(msg(mid))
        assert isinstance(out, MessageReceived) and out.message.id == mid and out.message.sender == "bob"
    assert acks(core) == []  # not yet
    assert core.queued_acks() == [1, 2, 3]
    assert core.next_timeout() == pytest.approx(0.1)
    clock.advance(0.1)
    core.tick()
    assert acks(core) == [[1, 2, 3]]
    assert core.queued_acks() == []


def test_duplicate_message_is_shown_once_but_acked_again():
    core, clock = logged_in()
    assert len(core.receive_dealer(msg(5))) == 1
    clock.advance(1)
    core.tick()
    assert acks(core) == [[5]]
    assert core.receive_dealer(msg(5)) == []  # pushed again: not shown ...
    clock.advance(1)
    core.tick()
    assert acks(core) == [[5]]  # ... but acked again
    core.receive_dealer(msg(6))
    core.receive_dealer(msg(6))
    clock.advance(1)
    core.tick()
    assert acks(core) == [[6]]  # one id once per ack


def test_full_batch_is_acked_at_once_and_split_at_1000():
    core, _ = logged_in(ack_batch=3)
    for mid in (1, 2):
        core.receive_dealer(msg(mid))
    assert acks(core) == []
    core.receive_dealer(msg(3))
    assert acks(core) == [[1, 2, 3]]
    big, clock = logged_in(ack_batch=5000)  # clamped to 1000 per ack
    for mid in range(1, 1001):
        big.receive_dealer(msg(mid))
    assert [len(ids) for ids in acks(big)] == [MAX_ACK_IDS]


def test_new_session_resets_message_dedup():
    core, _ = logged_in()
    core.receive_dealer(msg(5))
    req = core.request(m.Logout(req=0))
    core.data_to_send()
    core.receive_dealer(wire.encode_ok(req, {"session": True}))
    assert core.session is None
    req = core.request(m.Login(req=0, version=1, user="alice", password="pw123456"))
    core.receive_dealer(wire.encode_ok(req, LOGIN))
    assert len(core.receive_dealer(msg(5))) == 1  # unacked mail comes again at the next login


# ---- heartbeat, lost broker, session end --------------------------------------------------


def test_ping_due_after_heartbeat_interval_of_silence():
    core, clock = logged_in()
    clock.advance(4.9)
    assert not core.ping_due()
    assert core.tick() == [] and sent(core) == []
    clock.advance(0.1)
    assert core.ping_due()
    core.tick()
    assert [t for t, _ in sent(core)] == [b"ping"]
    clock.advance(2)
    core.tick()
    assert sent(core) == []  # the ping counts as sent: next one an interval later
    clock.advance(3)
    core.tick()
    assert [t for t, _ in sent(core)] == [b"ping"]  # again, though the first still waits


def test_lost_internal_requests_are_expired_by_a_later_reply():
    core, clock = logged_in()
    core.receive_dealer(msg(7))
    clock.advance(1)
    core.tick()
    assert [t for t, _ in sent(core)] == [b"ack"]  # lost with a dropped connection ...
    clock.advance(5)
    core.tick()
    assert [t for t, _ in sent(core)] == [b"ping"]  # ... and so is this ping
    clock.advance(5)
    core.tick()
    ((_, ping2),) = sent(core)
    assert core.receive_dealer(wire.encode_ok(ping2.req, {"ts": 1.0, "session": True})) == []
    assert core.pending_count() == 0
    assert core.queued_acks() == [7]  # the lost ack's ids are acked again
    clock.advance(1)
    core.tick()
    assert acks(core) == [[7]]
    clock.advance(14)
    assert core.tick() == []  # nothing stale left to report as lost


def test_lost_history_request_is_asked_again():
    core, _ = logged_in()
    core.catch_up()
    ((_, hist),) = sent(core)
    req = core.request(m.Who(req=0))
    sent(core)
    core.receive_dealer(wire.encode_ok(req, {"users": [], "busy": [], "truncated": False}))
    ((kind, again),) = sent(core)
    assert kind == b"history" and again.after == hist.after and again.req != hist.req


def test_any_request_postpones_the_ping():
    core, clock = logged_in()
    clock.advance(4)
    req = core.request(m.Who(req=0))
    core.data_to_send()
    core.receive_dealer(wire.encode_ok(req, {"users": [], "busy": [], "truncated": False}))
    clock.advance(4)
    assert not core.ping_due()
    clock.advance(1)
    assert core.ping_due()


def test_unanswered_ping_reports_broker_lost_once():
    core, clock = logged_in()
    clock.advance(5)
    core.tick()
    sent(core)
    clock.advance(15.5)
    out = core.tick()
    assert len(out) == 1 and isinstance(out[0], BrokerLost) and out[0].waited == pytest.approx(15.5)
    assert core.tick() == []


def test_answered_ping_is_not_lost():
    core, clock = logged_in()
    clock.advance(5)
    core.tick()
    ((_, ping),) = sent(core)
    assert core.receive_dealer(wire.encode_ok(ping.req, {"ts": 1.0, "session": True})) == []  # internal: consumed
    clock.advance(14)
    assert core.tick() == []


def test_no_ping_without_session():
    core = ClientCore(clock=Clock())
    core._clock.advance(100)  # type: ignore[attr-defined]
    assert not core.ping_due() and core.tick() == []


def test_end_push_ends_session():
    core, _ = logged_in()
    out = core.receive_dealer(wire.encode_end("replaced", "you logged in elsewhere"))
    assert out == [SessionEnded("replaced", "you logged in elsewhere")]
    assert core.session is None and core.last_seq is None


def test_not_logged_in_reply_in_session_ends_it():
    core, _ = logged_in()
    req = core.request(m.Who(req=0))
    out = core.receive_dealer(wire.encode_error(req, ErrorCode.NOT_LOGGED_IN, "log in first"))
    assert isinstance(out[0], ReplyReceived) and out[1].reason == "not_logged_in"
    assert core.session is None


def test_request_frames_use_the_wire_format():
    core = ClientCore(clock=Clock())
    req = core.request(m.Send(req=0, id="abc", to=["bob", "carol"], text="héllo ✓"))
    ((kind, body),) = core.data_to_send()
    assert kind == b"send"
    assert msgspec.json.decode(body) == {"req": req, "id": "abc", "to": ["bob", "carol"], "text": "héllo ✓"}


def test_ping_reply_without_session_ends_the_session():
    from zmq_chat.client.core import ClientCore, SessionEnded
    from zmq_chat.protocol import messages as m
    from zmq_chat.protocol import wire

    core = ClientCore()
    req = core.request(m.Login(req=0, version=1, user="alice", password="password1"))
    core.data_to_send()
    core.receive_dealer(wire.encode_ok(req, {"user": "alice", "pub_port": 1, "seq": 0, "since": 0, "since_ts": 1.0,
                                             "heartbeat_interval": 5.0, "heartbeat_timeout": 15.0,
                                             "idle_timeout": 1800.0, "max_message_chars": 1000,
                                             "pub_heartbeat": 2.0, "dup": False, "epoch": ""}))
    assert core.session is not None
    ping = core.request(m.Ping(req=0))
    out = core.receive_dealer(wire.encode_ok(ping, {"ts": 2.0, "session": False}))
    assert any(isinstance(o, SessionEnded) for o in out) and core.session is None


# -- the PUB welcome and heartbeat (docs 7.4), acks before logout, retried history -----------------

def mark(topic: bytes, seq: int) -> list[bytes]:
    return [topic, msgspec.json.encode({"seq": seq, "ts": 1.0e9})]


def test_catch_up_waits_for_the_welcome_of_its_own_topic():
    core, clock = logged_in()
    assert core.welcome_topic in core.sub_topics() and b"" not in core.sub_topics()
    core.sub_opened()
    assert core.receive_event(mark(b"welcome." + b"0" * 32, 10)) == []  # someone else's welcome
    assert sent(core) == []
    core.receive_event(mark(core.welcome_topic, 10))
    assert [(k, r.after) for k, r in sent(core)] == [(b"history", 7)]


def test_catch_up_is_asked_anyway_without_a_welcome():
    core, clock = logged_in()
    core.sub_opened()
    clock.advance(2.9)
    core.tick()
    assert [k for k, _ in sent(core) if k == b"history"] == []
    clock.advance(0.2)
    core.tick()
    assert [k for k, _ in sent(core) if k == b"history"] == [b"history"]


def test_a_pub_heartbeat_ahead_of_the_last_seq_repairs_at_once():
    core, clock = logged_in()
    core.catch_up()
    (_, hist), = sent(core)
    core.receive_dealer(wire.encode_ok(hist.req, {"events": [], "seq": 7, "complete": True}))
    assert core.receive_event(mark(b"hb", 7)) == [] and sent(core) == []  # nothing missed
    core.receive_event(mark(b"hb", 9))  # events 8 and 9 were lost before a quiet period
    assert [(k, r.after) for k, r in sent(core)] == [(b"history", 7)]


def test_history_refused_for_a_while_is_asked_again_after_retry_after():
    core, clock = logged_in()
    core.catch_up()
    (_, hist), = sent(core)
    core.receive_dealer(wire.encode_error(hist.req, ErrorCode.OVERLOADED, "later", {"retry_after": 1.5}))
    core.tick()
    assert sent(core) == []
    clock.advance(1.5)
    core.tick()
    assert [(k, r.after) for k, r in sent(core)] == [(b"history", 7)]


def test_flush_acks_makes_caller_requests_for_every_queued_id():
    core, clock = logged_in()
    for mid in (1, 2, 3):
        core.receive_dealer(wire.encode_msg(m.PrivateMessage(mid, "bob", "alice", 1.0, "x", f"c{mid}")))
    reqs = core.flush_acks()
    (kind, ack), = sent(core)
    assert kind == b"ack" and ack.ids == [1, 2, 3] and reqs == [ack.req]
    out = core.receive_dealer(wire.encode_ok(ack.req, {"removed": 3}))
    assert [o.req for o in out if isinstance(o, ReplyReceived)] == reqs  # the caller can wait for it
    assert core.queued_acks() == []


# -- epoch (docs 9.4) and resuming a session lost with its broker (failover) -----------------------

def login_again(core: ClientCore, **fields) -> list:
    """Send a login and answer it with LOGIN changed by `fields`; returns the outputs."""
    req = core.request(m.Login(req=0, version=1, user="alice", password="pw123456"))
    core.data_to_send()
    return core.receive_dealer(wire.encode_ok(req, {**LOGIN, **fields}))


def history_after(core: ClientCore) -> list[int]:
    """The `after` of every history request the core wants to send."""
    return [req.after for t, req in sent(core) if t == b"history"]


def test_a_new_epoch_at_a_later_login_is_reported_and_the_old_numbers_are_not_asked():
    core, _ = logged_in()
    assert core.epoch == "e1"
    core.end_session()
    out = login_again(core, epoch="e2", seq=3, since=2)
    assert [o for o in out if isinstance(o, EpochChanged)] == [EpochChanged("e1", "e2", 3)]
    assert isinstance(out[0], ReplyReceived)  # the reply first, then the news
    assert core.last_seq == 3 and core.epoch == "e2"
    core.catch_up()
    assert history_after(core) == [3]  # not `since` (2), a number of the old log's


def test_the_same_epoch_catches_up_from_since_and_reports_nothing():
    core, _ = logged_in()
    core.end_session()
    out = login_again(core, seq=12, since=9)
    assert not any(isinstance(o, EpochChanged) for o in out)
    assert core.last_seq == 9


def test_an_unknown_epoch_on_either_side_is_no_change():
    core, _ = logged_in()
    core.end_session()
    assert not any(isinstance(o, EpochChanged) for o in login_again(core, epoch=""))  # an older broker
    assert core.epoch == "e1" and core.last_seq == 7
    fresh = ClientCore(clock=Clock())
    assert not any(isinstance(o, EpochChanged) for o in login_again(fresh, epoch="e9"))  # the first login
    assert fresh.epoch == "e9"


def test_a_lost_session_resumes_from_its_last_seq_keeping_shown_ids_and_acks():
    core, clock = logged_in()
    core.catch_up()
    answer_history(core, [event(8), event(9)], 10)
    core.receive_dealer(msg(5))
    clock.advance(1.0)
    core.tick()
    assert acks(core) == [[5]]  # in flight when the broker is lost: owed again
    core.lose_session()
    assert core.session is None and core.pending_count() == 0 and core.data_to_send() == []
    out = login_again(core, seq=14, since=12)  # the broker's since is past what this client saw
    assert core.last_seq == 9
    assert [o for o in core.receive_dealer(msg(5)) if isinstance(o, MessageReceived)] == []  # shown once
    assert 5 in core.queued_acks()
    assert not any(isinstance(o, EpochChanged) for o in out)
    core.catch_up()
    assert history_after(core) == [9]


def test_a_lost_session_with_a_new_epoch_starts_at_the_reply_seq():
    core, _ = logged_in()
    core.receive_dealer(msg(5))
    core.lose_session()
    out = login_again(core, epoch="e2", seq=4, since=1)
    assert any(isinstance(o, EpochChanged) for o in out)
    assert core.last_seq == 4 and core.queued_acks() == []
    assert [o.message.id for o in core.receive_dealer(msg(5)) if isinstance(o, MessageReceived)] == [5]


def test_a_lost_session_is_not_resumed_by_another_user():
    core, _ = logged_in()
    core.lose_session()
    login_again(core, user="bob", seq=12, since=11)
    assert core.last_seq == 11


def test_a_retried_login_answered_again_keeps_the_session_going():
    core, _ = logged_in()
    core.catch_up()
    answer_history(core, [event(8), event(9), event(10)], 10)
    login_again(core, dup=True)
    assert core.last_seq == 10 and core.session is not None
