"""RedisBackplane (broker.redisfeed): brokers on one real redis-server read each other's log entries
and notices (mail only where its recipient is in session), reap a dead broker's sessions exactly
once, report streams trimmed before they were read, and stop on a lost epoch. Each "broker" is
a RedisStore with its backplane (the core is not involved); the one that dies is a subprocess killed
with SIGKILL. Every wait is a deadline poll."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from typing import Callable

import msgspec
import pytest

from zmq_chat.broker.feed import (
    DupNotice, EpochLost, FeedLost, LogEvent, MailNotice, OfflineNotice, OnlineNotice, SeenNotice, UserNotice,
)
from zmq_chat.broker.redisstore import RedisStore
from zmq_chat.broker.storage import SendRecord, UserRecord, WriteBatch
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.wire import decode_stored_event
from tests.redis_server import bcast_body

pytestmark = pytest.mark.timeout(60)

T0 = 1_800_000_000.0
REPLY = b'{"status":"ok","digest":5,"ids":{},"ts":1.0,"busy":[]}'


class Broker:
    """A RedisStore, loaded, with its backplane started (ttl seconds; unless not `start`: then
    call backplane.start() later); `items` collects what its backplane delivered (call poll())."""

    def __init__(self, url: str, ttl: float = 3.0, start: bool = True, **store_kw) -> None:
        self.store = RedisStore(url, **store_kw)
        self.snap = self.store.load(0.0)
        self.backplane = self.store.backplane(ttl=ttl)
        if start:
            self.backplane.start(lambda: None)
        self.items: list = []
        self.id = self.store.broker_id

    def poll_until(self, want: Callable[[list], bool], timeout: float = 10.0) -> list:
        """Drain until `want(items)` holds (a deadline poll); returns items."""
        deadline = time.monotonic() + timeout
        while True:
            self.items += self.backplane.drain()
            if want(self.items):
                return self.items
            assert time.monotonic() < deadline, f"never got what was waited for; got {self.items}"
            time.sleep(0.01)

    def of(self, kind: type) -> list:
        return [x for x in self.items if isinstance(x, kind)]

    def close(self) -> None:
        self.backplane.close()
        self.store.close()


@pytest.fixture
def brokers(redis_server):
    made: list[Broker] = []

    def make(ttl: float = 3.0, **kw) -> Broker:
        b = Broker(redis_server.url, ttl, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def _kinds(db, stream: str) -> list[tuple[bytes, bytes]]:
    """(kind, origin broker id) of each entry of a feed stream, oldest first."""
    return [(f[b"k"], f[b"o"]) for _, f in db.xrange(stream)]


def test_a_broker_reads_the_others_log_in_seq_order_and_their_notices_but_not_its_own(redis_server, brokers):
    """Every broker reads the whole log and every other broker's account and session notices; mail
    notices go only to the broker its recipient is in session on (none for its own sessions, none
    for a recipient online nowhere: its next login reads the mailbox), a dup notice only to the
    broker whose commit found the send id taken."""
    a, b = brokers(), brokers()
    assert a.store.claim_user(UserRecord("alice", "$a", T0)) and a.store.claim_user(UserRecord("bob", "$b", T0))
    here = WriteBatch()
    here.notices.append(OnlineNotice("bob", b.id, T0 + 1, True))
    b.store.commit(here)
    first = WriteBatch()
    first.users.append(UserRecord("carol", "$c", T0))
    mail = m.PrivateMessage(a.snap.last_mail_id + 1, "alice", "bob", T0, "hi bob", "p1")
    first.mail += [mail, m.PrivateMessage(a.snap.last_mail_id + 2, "alice", "carol", T0, "hi carol", "p1")]
    first.sends.append(SendRecord("alice", "p1", T0, REPLY, mail.id))
    first.events += [(0, bcast_body("alice", "b1")), (0, bcast_body("alice", "b2"))]
    first.notices.append(OnlineNotice("alice", a.id, T0, False))
    a.store.commit(first)
    own = WriteBatch()  # b's own commit: its event is in the log for everyone, its notices are not for b
    own.events.append((0, bcast_body("bob", "b3")))
    own.mail.append(m.PrivateMessage(b.snap.last_mail_id + 1, "bob", "alice", T0, "hi alice", "p2"))
    own.mail.append(m.PrivateMessage(b.snap.last_mail_id + 2, "alice", "bob", T0, "retried", "p1"))
    own.sends.append(SendRecord("bob", "p2", T0, REPLY, b.snap.last_mail_id + 1))
    own.sends.append(SendRecord("alice", "p1", T0, REPLY, b.snap.last_mail_id + 2))  # a's send id: a dup for b
    b.store.commit(own)
    later = WriteBatch()
    later.events.append((0, bcast_body("alice", "b4")))
    later.mail.append(m.PrivateMessage(a.snap.last_mail_id + 3, "bob", "alice", T0, "to a's own session", "p3"))
    later.acks.append(("bob", [mail.id]))
    later.last_seen.append(("alice", T0 + 9, False, 4))
    later.notices.append(OfflineNotice("alice", a.id))
    a.store.commit(later)
    b.poll_until(lambda items: any(isinstance(x, OfflineNotice) for x in items) and len(b.of(LogEvent)) == 4
                 and len(b.of(DupNotice)) == 1)
    assert [(x.seq, decode_stored_event(x.body).cid) for x in b.of(LogEvent)] == [
        (1, "b1"), (2, "b2"), (3, "b3"), (4, "b4")]
    everyones = [x for x in b.items if isinstance(x, (UserNotice, SeenNotice, OnlineNotice, OfflineNotice))]
    assert everyones == [UserNotice(UserRecord("alice", "$a", T0)), UserNotice(UserRecord("bob", "$b", T0)),
                         UserNotice(UserRecord("carol", "$c", T0)), OnlineNotice("alice", a.id, T0, False),
                         SeenNotice("alice", T0 + 9, False, 4), OfflineNotice("alice", a.id)]
    assert [x for x in b.items if isinstance(x, (MailNotice, DupNotice))] == [
        MailNotice(mail), DupNotice("alice", "p1", REPLY.decode())]
    a.poll_until(lambda items: any(isinstance(x, OnlineNotice) for x in items) and len(a.of(LogEvent)) == 4
                 and len(a.of(MailNotice)) == 1)
    assert not a.of(DupNotice) and [x.msg.text for x in a.of(MailNotice)] == ["hi alice"]  # b's dup is b's
    assert a.of(OnlineNotice) == [OnlineNotice("bob", b.id, T0 + 1, True)]
    db = redis_server.client()
    assert _kinds(db, f"zc:feed:{a.id}") == [(b"mail", b.id.encode())]  # none for carol, none for a's own alice
    assert _kinds(db, f"zc:feed:{b.id}") == [(b"mail", a.id.encode()), (b"dup", b.id.encode())]
    assert b"ack" not in {k for k, _ in _kinds(db, "zc:feed")} and b"mail" not in {k for k, _ in _kinds(db, "zc:feed")}


def test_a_backplane_that_fell_behind_a_short_stream_reports_each_lost_stream_once(redis_server, brokers):
    """A reader that starts after more notices than a stream keeps (here 50, about) were added to
    it, and after the log was pruned past its position, gets one FeedLost per stream before what
    is left of it, and reads on from there; later entries bring no second FeedLost."""
    reader = brokers(start=False)
    writer = brokers(feed_maxlen=50)
    here = WriteBatch()
    here.notices.append(OnlineNotice("bob", reader.id, T0, False))
    reader.store.commit(here)
    base, total = writer.snap.last_mail_id, 500
    for first in range(0, total, 50):
        batch = WriteBatch()
        for i in range(first, first + 50):
            batch.mail.append(m.PrivateMessage(base + i + 1, "alice", "bob", T0, f"m{i}", f"c{i}"))
            batch.users.append(UserRecord(f"user{i}", "$u", T0))
            batch.events.append((0, bcast_body("alice", f"b{i}")))
        batch.prune = (10, 0.0)  # the log keeps 10 events
        writer.store.commit(batch)
    db = redis_server.client()
    assert db.xlen(f"zc:feed:{reader.id}") < total and db.xlen("zc:feed") < total  # trimmed
    assert db.xlen("zc:log") == 10
    reader.backplane.start(lambda: None)
    items = reader.poll_until(lambda items: len(reader.of(MailNotice)) == db.xlen(f"zc:feed:{reader.id}")
                              and len(reader.of(LogEvent)) == 10 and len(reader.of(UserNotice)) == db.xlen("zc:feed"))
    streams = ["zc:log", "zc:feed", f"zc:feed:{reader.id}"]
    assert sorted(x.stream for x in reader.of(FeedLost)) == sorted(streams)
    for stream, kind in zip(streams, (LogEvent, UserNotice, MailNotice), strict=True):
        lost = items.index(FeedLost(stream))
        assert lost < min(i for i, x in enumerate(items) if isinstance(x, kind))  # the gap, then what is left
    assert reader.of(MailNotice)[-1].msg.text == f"m{total - 1}" and reader.of(LogEvent)[-1].seq == total
    more = WriteBatch()
    more.mail.append(m.PrivateMessage(base + total + 1, "alice", "bob", T0, "after", "c-after"))
    more.users.append(UserRecord("late", "$l", T0))
    more.events.append((0, bcast_body("alice", "after")))
    writer.store.commit(more)
    reader.poll_until(lambda items: reader.of(MailNotice)[-1].msg.text == "after" and len(reader.of(LogEvent)) == 11
                      and reader.of(UserNotice)[-1].record.name == "late")
    assert len(reader.of(FeedLost)) == 3  # read on from what was left: no gap, no second report


def _dying_broker(url: str) -> subprocess.Popen:
    """A broker process (RedisStore and backplane, ttl 1 s) with alice in session (visible) and bob
    (hidden); kill it with SIGKILL."""
    code = """if True:
        import sys, time
        from zmq_chat.broker.feed import OnlineNotice
        from zmq_chat.broker.redisstore import RedisStore
        from zmq_chat.broker.storage import WriteBatch
        store = RedisStore(sys.argv[1])
        store.load(0.0)
        store.backplane(ttl=1.0).start(lambda: None)
        batch = WriteBatch()
        batch.notices += [OnlineNotice("alice", store.broker_id, 1.0, False), OnlineNotice("bob", store.broker_id, 2.0, True)]
        store.commit(batch)
        time.sleep(120)
    """
    return subprocess.Popen([sys.executable, "-c", code, url], stdin=subprocess.DEVNULL)


def test_a_dead_brokers_sessions_are_reaped_exactly_once_by_the_survivors(redis_server, brokers):
    setup = WriteBatch()
    setup.users += [UserRecord("alice", "$a", T0), UserRecord("bob", "$b", T0)]
    survivors = [brokers(), brokers()]
    survivors[0].store.commit(setup)
    db = redis_server.client()
    dying = _dying_broker(redis_server.url)
    try:
        deadline = time.monotonic() + 20
        while db.hlen("zc:online") < 2:
            assert dying.poll() is None and time.monotonic() < deadline, "the dying broker never came online"
            time.sleep(0.01)
        dead = msgspec.json.decode(db.hget("zc:online", "alice"))["broker"]
        mail = WriteBatch()  # for alice, in session on the dying broker: a notice in its stream
        mail.mail.append(m.PrivateMessage(survivors[0].snap.last_mail_id + 1, "bob", "alice", T0, "hi", "c1"))
        survivors[0].store.commit(mail)
        assert _kinds(db, f"zc:feed:{dead}") == [(b"mail", survivors[0].id.encode())]
    finally:
        dying.kill()
        dying.wait(timeout=10)
    for b in survivors:
        b.poll_until(lambda items: len([x for x in items if isinstance(x, OfflineNotice)]) == 2)
    deadline = time.monotonic() + 10
    while db.sismember("zc:brokers", dead):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert sum(b.backplane.reaped for b in survivors) == 2 and db.hlen("zc:online") == 0
    assert not db.exists(f"zc:feed:{dead}")  # its stream went with it
    log = [decode_stored_event(f[b"b"]) for _, f in db.xrange("zc:log")]
    assert [(e.seq, e.user, e.event) for e in log] == [(1, "alice", "lost")]  # none for hidden bob
    feed = [(f[b"k"], msgspec.json.decode(f[b"b"]).get("user")) for _, f in db.xrange("zc:feed") if f[b"o"] == dead.encode()]
    assert sorted(feed) == sorted([(b"online", "alice"), (b"online", "bob"), (b"seen", "alice"), (b"seen", "bob"),
                                   (b"offline", "alice"), (b"offline", "bob")])
    for b in survivors:  # each survivor (the reaper too) reads the reaped sessions' notices once
        b.poll_until(lambda items: len([x for x in items if isinstance(x, SeenNotice)]) == 2)
        assert sorted((x.user, x.broker) for x in b.of(OfflineNotice)) == [("alice", dead), ("bob", dead)]
        assert sorted((x.user, x.hidden) for x in b.of(SeenNotice)) == [("alice", False), ("bob", True)]
        assert [(x.seq, decode_stored_event(x.body).event) for x in b.of(LogEvent)] == [(1, "lost")]
    users = survivors[0].store.load(0.0).users
    assert users["alice"].last_seen is not None and users["bob"].last_seen_hidden is True


def test_a_broker_that_closes_leaves_nothing_to_reap(redis_server, brokers):
    """close() takes the broker out of zc:brokers, the only ids a survivor reaps (the broker
    ended its sessions itself; an entry it left in zc:online stays, not ended a second time), and
    deletes its feed stream, which no later commit makes again."""
    leaving = brokers(ttl=1.0)
    online = WriteBatch()
    online.notices.append(OnlineNotice("alice", leaving.id, T0, False))
    leaving.store.commit(online)
    survivor = brokers()
    db = redis_server.client()

    def mail_alice(i: int) -> None:
        batch = WriteBatch()
        batch.mail.append(m.PrivateMessage(survivor.snap.last_mail_id + i, "bob", "alice", T0, "hi", f"c{i}"))
        survivor.store.commit(batch)

    mail_alice(1)
    assert db.sismember("zc:brokers", leaving.id) and db.exists(f"zc:broker:{leaving.id}", f"zc:feed:{leaving.id}") == 2
    leaving.backplane.close()
    assert not db.sismember("zc:brokers", leaving.id) and not db.exists(f"zc:broker:{leaving.id}", f"zc:feed:{leaving.id}")
    mail_alice(2)
    assert not db.exists(f"zc:feed:{leaving.id}") and db.zcard("zc:mbox:alice") == 2  # stored, for her next login
    assert survivor.store._call(survivor.backplane._reap, [survivor.snap.epoch, leaving.id, "1.0"]) == -1
    assert db.hexists("zc:online", "alice") and db.xlen("zc:log") == 0


def test_a_changed_epoch_is_reported_once_and_the_new_log_is_never_read(redis_server, brokers):
    old = brokers(ttl=0.6)
    db = redis_server.client()
    db.set("zc:epoch", "another")
    old.poll_until(lambda items: any(isinstance(x, EpochLost) for x in items))
    assert "another" in old.of(EpochLost)[0].reason and old.snap.epoch in old.of(EpochLost)[0].reason
    db.flushall()
    new = brokers()  # a broker on a new log
    assert new.snap.epoch not in ("another", old.snap.epoch)
    batch = WriteBatch()
    batch.events.append((0, bcast_body("alice", "new log")))
    new.store.commit(batch)
    new.poll_until(lambda items: len(new.of(LogEvent)) == 1)
    old.items += old.backplane.drain()
    assert len(old.of(EpochLost)) == 1 and old.of(LogEvent) == []  # never a new log's seq for the old one


def test_a_lost_epoch_is_reported(redis_server, brokers):
    b = brokers(ttl=0.6)
    redis_server.client().flushall()  # as a Redis that restarted without its data
    b.poll_until(lambda items: any(isinstance(x, EpochLost) for x in items))
    assert "gone" in b.of(EpochLost)[0].reason


def test_the_backplane_reconnects_after_redis_restarts(redis_server, brokers):
    reader, writer = brokers(), brokers()
    first = WriteBatch()
    first.events.append((0, bcast_body("alice", "before")))
    writer.store.commit(first)
    reader.poll_until(lambda items: len(items) == 1)
    db = redis_server.client()
    redis_server.kill9()
    _wait(lambda: reader.backplane.outages == 1, "the reader to notice")
    redis_server.start()
    second = WriteBatch()
    second.events.append((0, bcast_body("alice", "after")))
    writer.store.commit(second)  # (a commit meeting the dead connection retries by itself)
    reader.poll_until(lambda items: len(items) == 2)  # read on from where it was: nothing twice
    assert [(x.seq, decode_stored_event(x.body).cid) for x in reader.of(LogEvent)] == [(1, "before"), (2, "after")]
    _wait(lambda: db.exists(f"zc:broker:{reader.id}"), "the reader's liveness key")


def _wait(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _halt(b: Broker) -> None:
    """Stop `b`'s backplane thread as if its process froze: its liveness key is no longer refreshed
    (and not removed); resume with _resume()."""
    b.backplane._stop.set()
    assert b.backplane._thread is not None
    b.backplane._thread.join(timeout=15)
    b.backplane._thread = None


def _resume(b: Broker) -> None:
    b.backplane._stop.clear()
    b.backplane.start(lambda: None)  # refreshes its liveness key first, then reads


def _online(b: Broker, user: str) -> None:
    batch = WriteBatch()
    batch.notices.append(OnlineNotice(user, b.id, T0, False))
    b.store.commit(batch)


def test_a_live_broker_is_not_reaped_because_redis_was_down_longer_than_its_ttl(redis_server, brokers):
    """A restarted Redis holds the liveness keys with their expiry times: after an outage longer
    than the ttl every key is gone. A broker reaps only once it has talked to the restarted Redis
    for REAP_GRACE seconds; a live broker that comes back within that is kept, a dead one reaped."""
    ttl = 0.6
    reaper, early_dead = brokers(ttl), brokers(ttl)
    _halt(early_dead)  # reaped before the outage: the reaper is steady on this Redis run then
    db = redis_server.client()
    _wait(lambda: not db.sismember("zc:brokers", early_dead.id), "the first reap")
    late, dead = brokers(ttl), brokers(ttl)
    _online(late, "lena")
    _online(dead, "dora")
    _halt(late)  # slow to come back after the outage (but within REAP_GRACE)
    _halt(dead)  # never comes back
    redis_server.kill9()
    _wait(lambda: reaper.backplane.outages == 1, "the reaper to notice")
    time.sleep(ttl)  # the outage: longer than the ttl, so the restarted Redis has every key expired
    redis_server.start()
    _wait(lambda: db.exists(f"zc:broker:{reaper.id}"), "the reaper to come back")
    assert not db.exists(f"zc:broker:{late.id}")  # late is not back yet: without liveness, as dead is
    _resume(late)
    _wait(lambda: not db.sismember("zc:brokers", dead.id), "the dead broker to be reaped")
    assert db.sismember("zc:brokers", late.id) and db.hexists("zc:online", "lena")
    assert not db.hexists("zc:online", "dora") and reaper.backplane.reaped + late.backplane.reaped == 1
    assert [decode_stored_event(f[b"b"]).user for _, f in db.xrange("zc:log")] == ["dora"]  # dora's `lost` only


def test_a_live_broker_is_not_reaped_because_redis_stalled_longer_than_its_ttl(redis_server, brokers, caplog):
    """A Redis that answers nothing for a while (SIGSTOP here; a slow fsync in life) lets the
    liveness keys expire while nobody can refresh them: a broker whose command waited through it
    counts as not steady and gives the others REAP_GRACE seconds (b, slow to come back, is kept);
    a broker that really stopped is reaped."""
    caplog.set_level(logging.INFO, logger="zmq_chat.broker.redisfeed")
    ttl = 0.6
    a, b, early_dead = brokers(ttl), brokers(ttl), brokers(ttl)
    _halt(early_dead)  # reaped before the stall: a and b are steady on this Redis run then
    db = redis_server.client()
    _wait(lambda: not db.sismember("zc:brokers", early_dead.id), "the first reap")
    dead = brokers(ttl)
    _online(a, "anna")
    _online(b, "bert")
    _online(dead, "dora")
    _halt(dead)
    _halt(b)  # b will be slow to come back after the stall (a live broker all the same)
    waiting = "brokers without liveness; reaping them if still so"
    before = caplog.text.count(waiting)
    redis_server.pause()
    time.sleep(2 * ttl)  # the stall: longer than the ttl, so every liveness key expires in it
    redis_server.resume()
    _wait(lambda: caplog.text.count(waiting) > before, "a to see b and dead without liveness, and wait")
    _resume(b)
    _wait(lambda: not db.sismember("zc:brokers", dead.id), "the dead broker to be reaped")
    assert db.sismember("zc:brokers", a.id) and db.sismember("zc:brokers", b.id)
    assert db.hexists("zc:online", "anna") and db.hexists("zc:online", "bert") and not db.hexists("zc:online", "dora")
    assert [decode_stored_event(f[b"b"]).user for _, f in db.xrange("zc:log")] == ["dora"]
