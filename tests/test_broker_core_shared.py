"""The broker core on a shared store (issue 10), pure: a fake clock, an in-memory store that numbers
events at commit as a shared store does, and the backplane's items fed by hand (broker.feed)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.core_harness import PASSWORD, CoreRig, _verifies, fast_hash
from zmq_chat.broker.sendrules import content_digest
from zmq_chat.broker.feed import DupNotice, FeedLost, LogEvent, MailNotice, OfflineNotice, OnlineNotice, UserNotice
from zmq_chat.broker.memstore import MemoryStore
from zmq_chat.broker.reads import run_read
from zmq_chat.broker.sharedio import SharedIO
from zmq_chat.broker.storage import SendRecord, UserRecord, WriteBatch
from zmq_chat.protocol import messages as m
from zmq_chat.protocol import wire


class SharedMemoryStore(MemoryStore):
    """MemoryStore acting as a shared store: commit numbers events (the batch carries seq 0) and
    keeps them in `logged` for the rig to feed back as the backplane would; claim_user, sends_of."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.logged: list[LogEvent] = []
        self.claims: list[Any] = []  # what claim_user answers next (True when empty)
        self.online: dict[str, tuple[str, float, bool]] = {}  # what refresh() says of zc:online

    def commit(self, batch: WriteBatch) -> None:
        numbered = []
        replies = {(x.sender, x.cid): x for x in batch.sends if not x.mail_id}
        for _, body in batch.events:
            self.seq += 1
            body = re.sub(rb'^\{"seq":\d+,', b'{"seq":%d,' % self.seq, bytes(body))
            numbered.append((self.seq, body))
            self.logged.append(LogEvent(self.seq, body))
            event = json.loads(body)
            record = replies.get((event["user"], event.get("cid", "")))
            if record is not None:  # a broadcast's first reply gets its number, as the commit script does
                replies[(record.sender, record.cid)] = SendRecord(
                    record.sender, record.cid, record.ts, record.reply.replace(b'"seq":0,', b'"seq":%d,' % self.seq))
        batch.events = numbered
        batch.sends = [replies.get((x.sender, x.cid), x) if not x.mail_id else x for x in batch.sends]
        super().commit(batch)

    def claim_user(self, record: UserRecord) -> bool:
        answer = self.claims.pop(0) if self.claims else True
        if isinstance(answer, Exception):
            raise answer
        if answer and record.name not in self.users:
            self.users[record.name] = record
            return True
        return False

    def refresh(self) -> Any:
        snap = self.load(0.0)
        snap.sends, snap.last_mail_id, snap.mail_id_limit = [], 0, 0
        snap.online = dict(self.online)
        return snap

    def sends_of(self, sender: str, since: float) -> list[SendRecord]:
        return [x for x in self.sends.values() if x.sender == sender and x.ts >= since]


class SharedRig(CoreRig):
    """CoreRig on a SharedMemoryStore: after each commit the rig runs the core's reads and feeds
    the newly logged events back (a backplane with no delay)."""

    def __init__(self, tmp: Any, **config: Any) -> None:
        super().__init__(tmp, SharedMemoryStore(), **config)
        self.core.broker_id = "here"
        self.fed = 0

    def take(self, keep_jobs: bool = True) -> Any:
        first = super().take(keep_jobs)
        while True:
            reads = first.reads
            logged = self.store.logged[self.fed:]
            self.fed = len(self.store.logged)
            if not reads and not logged:
                return first
            for job in reads:
                self.core.on_read(run_read(self.store, job))
            self.core.on_backplane(logged)
            more = super().take(keep_jobs)
            first.reads = more.reads

    def run_jobs(self, jobs: list[Any]) -> None:
        for job in jobs:
            job.result = fast_hash(job.password) if job.kind == "hash" else _verifies(job)
            if job.after is not None:
                try:
                    job.after(job)
                except Exception:
                    pass  # (broker.auth.run_job logs it)
            self.core.on_auth_result(job)
        out = self.take(keep_jobs=False)
        if out.jobs:
            self.run_jobs(out.jobs)

    def feed(self, *items: Any) -> None:
        self.core.on_backplane(list(items))
        self.take()


@pytest.fixture
def rig(tmp_path):
    return SharedRig(tmp_path, mail_window=3)


def test_a_broadcast_is_answered_with_the_number_the_store_gave_it(rig):
    alice = rig.user("alice")
    rig.store.seq = 41  # other brokers logged 41 events (this one has not read them: it starts at 1)
    reply = rig.call(alice, "broadcast", id="b1", text="hello all")
    assert (reply["status"], reply["seq"], reply["dup"]) == ("ok", 42, False)
    assert [(e.seq, e.text) for e in rig.events("bcast")] == [(42, "hello all")]
    again = rig.call(alice, "broadcast", id="b1", text="hello all")
    assert (again["seq"], again["dup"]) == (42, True)
    assert len(rig.events("bcast")) == 1


def test_a_broadcast_stored_first_by_another_broker_is_answered_with_its_first_reply(rig):
    alice = rig.user("alice")
    req = rig.send(alice, "broadcast", id="b1", text="hello")
    rig.core.on_backplane([DupNotice("alice", "b1", '{"status":"ok","digest":1,"seq":7,"ts":5.0}')])
    rig.take()
    reply = next(r for r in rig.replies(alice) + _bodies(rig, alice) if r["req"] == req)
    assert (reply["seq"], reply["dup"]) == (7, True)


def _bodies(rig: SharedRig, client: Any) -> list[dict]:
    return [json.loads(b) for rid, k, b, _ in rig.out.router if rid == client[0] and k == wire.REPLY]


def test_mail_stored_by_another_broker_is_pushed_here_and_counted(rig):
    bob = rig.user("bob")
    msg = m.PrivateMessage(10**12 + 1, "alice", "bob", 5.0, "from far away", "c1")
    rig.store.mail[msg.id] = msg  # (the other broker committed it)
    rig.feed(MailNotice(msg))
    assert [x.text for x in rig.pushes(bob)] == ["from far away"]
    assert rig.core.mail_counts["bob"] == 1


def test_mail_below_the_cursor_with_a_full_window_is_pushed_after_an_ack(rig):
    bob, alice = rig.user("bob"), rig.user("alice")
    ids = [rig.call(alice, "send", id=f"s{i}", to=["bob"], text=f"t{i}")["ids"]["bob"] for i in range(3)]
    assert len(rig.pushes(bob)) == 3  # the window (3) is full
    low = m.PrivateMessage(ids[0] - 1, "carol", "bob", 5.0, "an older id from another broker's lease", "c9")
    rig.store.mail[low.id] = low
    rig.feed(MailNotice(low))
    assert len(rig.pushes(bob)) == 3
    assert rig.call(bob, "ack", ids=ids)["removed"] == 3
    assert [x.id for x in rig.pushes(bob)][3:] == [low.id]


def test_the_later_login_elsewhere_ends_the_session_here(rig):
    alice = rig.user("alice")
    since = rig.core.by_user["alice"].since
    rig.feed(OnlineNotice("alice", "there", since - 1, False))  # older: this session stays
    assert rig.ends(alice) == []
    rig.feed(OnlineNotice("alice", "there", since + 1, False))
    assert [e.reason for e in rig.ends(alice)] == ["replaced"]
    assert "alice" not in rig.core.by_user


def test_who_lists_visible_sessions_of_every_broker(rig):
    alice = rig.user("alice")
    rig.feed(OnlineNotice("bob", "there", 1.0, False), OnlineNotice("carol", "there", 1.0, True))
    assert rig.call(alice, "who")["users"] == ["alice", "bob"]
    rig.feed(OfflineNotice("bob", "elsewhere"))  # not where bob is: nothing changes
    assert rig.call(alice, "who")["users"] == ["alice", "bob"]
    rig.feed(OfflineNotice("bob", "there"))
    assert rig.call(alice, "who")["users"] == ["alice"]


def test_history_is_read_off_the_loop_and_stops_at_the_newest_event_published_here(rig):
    alice = rig.user("alice")
    rig.call(alice, "broadcast", id="b1", text="one")
    rig.store.events[99] = b'{"seq":99,"ts":1.0,"kind":"bcast","user":"x","text":"not read here yet"}'
    req = rig.send(alice, "history", after=0, limit=100)
    out = rig.core.drain()
    assert [job.kind for job in out.reads] == ["history"] and not out.router  # no reply before the read
    rig.store.commit(out.writes)
    rig.core.on_read(run_read(rig.store, out.reads[0]))
    reply = next(r for r in rig.replies(alice) if r["req"] == req)
    assert [e["seq"] for e in reply["events"]] == [1, 2] and reply["complete"] is True


def test_an_ack_of_an_earlier_sessions_push_is_answered_after_the_read(rig):
    bob, alice = rig.user("bob"), rig.user("alice")
    mid = rig.call(alice, "send", id="s1", to=["bob"], text="hi")["ids"]["bob"]
    rig.call(bob, "logout")
    again = rig.connect()
    rig.call(again, "login", user="bob", password=PASSWORD)
    rig.core.by_user["bob"].inflight.clear()  # as if the push went before a reconnect
    assert rig.call(again, "ack", ids=[mid, mid + 1000])["removed"] == 1
    assert mid not in rig.store.mail


def test_a_registration_is_claimed_in_the_store_first(rig):
    c = rig.connect()
    rig.store.claims = [False]
    assert rig.call(c, "register", user="dora", password=PASSWORD)["code"] == "E_USER_EXISTS"
    rig.store.claims = [OSError("store down")]
    assert rig.call(c, "register", user="dora", password=PASSWORD)["code"] == "E_INTERNAL"
    assert rig.call(c, "register", user="dora", password=PASSWORD)["status"] == "ok"
    assert "dora" in rig.store.users and "dora" in rig.core.users


def test_a_login_learns_the_send_ids_stored_elsewhere(rig):
    rig.user("bob")
    rig.feed(UserNotice(UserRecord("alice", fast_hash(PASSWORD), 1.0)))
    rig.store.users["alice"] = rig.core.users["alice"]
    reply = b'{"status":"ok","digest":%d,"ids":{"bob":5},"ts":1.0,"busy":[]}'
    stored = SendRecord("alice", "s1", rig.clock.now, reply % content_digest(["bob"], "hi"))
    rig.store.sends[("alice", "s1")] = stored  # sent through another broker before a failover
    alice = rig.connect()
    rig.call(alice, "login", user="alice", password=PASSWORD)
    retry = rig.call(alice, "send", id="s1", to=["bob"], text="hi")
    assert (retry["status"], retry["dup"], retry["ids"]) == ("ok", True, {"bob": 5})


def test_a_login_that_replaces_a_session_elsewhere_publishes_no_second_login(rig):
    rig.user("bob")
    rig.feed(OnlineNotice("alice", "there", 1.0, False))
    c = rig.connect()
    rig.store.users["alice"] = UserRecord("alice", fast_hash(PASSWORD), 1.0)
    rig.feed(UserNotice(rig.store.users["alice"]))
    assert rig.call(c, "login", user="alice", password=PASSWORD)["status"] == "ok"
    assert [e.user for e in rig.events("presence")] == ["bob"]  # bob's own login only


def test_lost_notices_push_every_mailbox_again_from_its_start_without_duplicates(rig):
    bob, alice = rig.user("bob"), rig.user("alice")
    rig.core.last_mail_id = 100  # this broker's lease starts above another's
    first = rig.call(alice, "send", id="s1", to=["bob"], text="pushed and in flight")["ids"]["bob"]
    missed = m.PrivateMessage(50, "carol", "bob", 5.0, "its notice was trimmed", "c1")
    rig.store.mail[missed.id] = missed  # stored by another broker; this one never heard of it
    rig.feed(FeedLost("zc:feed:here"))
    assert [x.id for x in rig.pushes(bob)] == [first, missed.id]


def test_a_refresh_reloads_accounts_sessions_elsewhere_and_mailbox_sizes(rig):
    alice = rig.user("alice")
    rig.store.users["zed"] = UserRecord("zed", fast_hash(PASSWORD), 1.0)
    rig.store.mail[10**12] = m.PrivateMessage(10**12, "zed", "alice", 1.0, "x", "c")
    rig.store.online = {"zed": ("there", 1.0, False), "alice": ("here", 1.0, False)}
    rig.core.refresh()
    rig.take()
    assert "zed" in rig.core.users and rig.core.remote == {"zed": ("there", 1.0, False)}
    assert rig.core.mail_counts == {"alice": 1}
    assert rig.call(alice, "who")["users"] == ["alice", "zed"]


def _step(rig: SharedRig) -> Any:
    """Drain and commit, keep the output, return the reads without running them (no log fed)."""
    out = rig.core.drain()
    rig.store.commit(out.writes)
    rig.out.router.extend(out.router)
    rig.out.pub.extend(out.pub)
    return out


def _run_reads(rig: SharedRig, reads: list[Any]) -> int:
    """Run `reads` and every read they lead to; returns how many ran (at most 50)."""
    ran = 0
    while reads and ran < 50:
        job = reads.pop(0)
        rig.core.on_read(run_read(rig.store, job))
        reads += _step(rig).reads
        ran += 1
    return ran


def test_lost_notices_during_a_pump_read_still_push_the_mailbox_from_its_start(tmp_path):
    rig = SharedRig(tmp_path, mail_window=3)
    bob, alice = rig.user("bob"), rig.user("alice")
    rig.core.last_mail_id = 100
    ids = [rig.call(alice, "send", id=f"s{i}", to=["bob"], text=f"t{i}")["ids"]["bob"] for i in range(5)]
    rig.send(bob, "ack", ids=[ids[0]])
    (in_flight,) = _step(rig).reads  # a pump read beyond ids[2]
    missed = m.PrivateMessage(50, "carol", "bob", 5.0, "its notice was trimmed", "c1")
    rig.store.mail[missed.id] = missed
    rig.core.on_backplane([FeedLost("zc:feed:here")])
    _run_reads(rig, _step(rig).reads + [in_flight])
    assert missed.id in [x.id for x in rig.pushes(bob)]


def test_a_read_of_an_ended_session_is_not_applied_to_the_next_on_the_same_connection(tmp_path):
    rig = SharedRig(tmp_path, mail_window=3)
    alice, bob = rig.user("alice"), rig.user("bob")
    ids = [rig.call(alice, "send", id=f"s{i}", to=["bob"], text=f"t{i}")["ids"]["bob"] for i in range(5)]
    rig.send(bob, "ack", ids=[ids[0]])
    (old,) = _step(rig).reads
    rig.call(bob, "logout")
    before = len(rig.pushes(bob))
    rig.call(bob, "login", user="bob", password=PASSWORD)  # (its own read ran: ids 2, 3, 4 pushed)
    _run_reads(rig, [old])
    assert sorted(x.id for x in rig.pushes(bob)[before:]) == ids[1:4]


def test_a_failed_pump_read_is_read_again_at_the_next_tick(tmp_path):
    rig = SharedRig(tmp_path, mail_window=3)
    alice, bob = rig.user("alice"), rig.user("bob")
    ids = [rig.call(alice, "send", id=f"s{i}", to=["bob"], text=f"t{i}")["ids"]["bob"] for i in range(5)]
    rig.send(bob, "ack", ids=ids[:3])
    (failed,) = _step(rig).reads
    failed.error = OSError("read timed out")
    rig.core.on_read(failed)
    rig.clock.advance(1.0)
    rig.core.tick()
    assert _run_reads(rig, _step(rig).reads) >= 1
    assert [x.id for x in rig.pushes(bob)][3:] == ids[3:]


def test_a_broadcast_whose_log_entry_was_trimmed_is_answered_from_its_stored_reply(tmp_path):
    rig = SharedRig(tmp_path)
    alice = rig.user("alice")
    req = rig.send(alice, "broadcast", id="b1", text="hi")
    _step(rig)
    rig.fed = len(rig.store.logged)  # its entry is trimmed before this broker reads it
    seq = rig.store.seq
    rig.core.on_backplane([FeedLost("zc:log")])
    _run_reads(rig, _step(rig).reads)
    reply = next(r for r in _bodies(rig, alice) if r["req"] == req)
    assert (reply["seq"], reply["dup"]) == (seq, False) and not rig.core._pending_bcasts


def test_a_late_notice_of_a_dropped_push_does_not_make_reads_spin(tmp_path):
    rig = SharedRig(tmp_path, mail_window=3)
    bob = rig.user("bob")
    far = m.PrivateMessage(10**12 + 1, "carol", "bob", 5.0, "from far", "c1")
    rig.store.mail[far.id] = far
    rig.core.on_backplane([MailNotice(far)])
    _step(rig)
    rig.core.on_push_dropped(bob[0], far.id)
    s = rig.core.by_user["bob"]
    s.backlog = False
    rig.core.on_backplane([MailNotice(far)])  # its notice again (late, or after lost notices)
    _step(rig)
    rig.core._pump(s)
    assert _run_reads(rig, _step(rig).reads) == 0 and far.id in s.inflight and not s.dropped


def test_pushes_of_a_send_another_broker_stored_first_are_dropped_before_they_leave(rig):
    bob, alice = rig.user("bob"), rig.user("alice")
    rig.send(alice, "send", id="c1", to=["bob"], text="retried here, stored elsewhere")
    out = rig.core.drain()
    pushed = [x for x in out.router if x[3]]
    assert [x[0] for x in pushed] == [bob[0]]
    SharedIO.drop_unstored(out, {("alice", "c1")}, rig.core)
    assert not [x for x in out.router if x[3]] and [x[0] for x in out.router] == [alice[0]]  # the reply stays
    s = rig.core.by_user["bob"]
    assert not s.inflight and s.dropped == {pushed[0][3]}  # the next pump finds it gone


def test_who_marks_the_busy_on_other_brokers_from_their_presence_events(rig):
    alice = rig.user("alice")
    rig.feed(OnlineNotice("bob", "there", 1.0, False))
    nxt = rig.core.seq + 1
    rig.feed(LogEvent(nxt, b'{"seq":%d,"ts":1.0,"kind":"presence","user":"bob","event":"busy"}' % nxt))
    assert rig.call(alice, "who")["busy"] == ["bob"]
    rig.feed(LogEvent(nxt + 1, b'{"seq":%d,"ts":1.0,"kind":"presence","user":"bob","event":"available"}' % (nxt + 1)))
    assert rig.call(alice, "who")["busy"] == []
