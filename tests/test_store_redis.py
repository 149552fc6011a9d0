"""RedisStore beyond the store contract (tests/test_store_contract.py runs that on Redis too): the
durability check, the epoch, two stores (two brokers) on one Redis (send ids, seqs, mail id leases),
kill -9 of redis-server itself, and Redis going away under a commit (retried, applied once). Every
test runs a real redis-server (tests/redis_server.py)."""

from __future__ import annotations

import logging
import threading
import time

import msgspec
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from zmq_chat.broker import redislua
from zmq_chat.broker.feed import OfflineNotice, OnlineNotice
from zmq_chat.broker.redisstore import RedisStore
from zmq_chat.broker.storage import SendRecord, StoreError, UserRecord, WriteBatch
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.wire import decode_stored_event, encode_json
from tests.redis_server import free_port
from tests.redis_server import bcast_body

pytestmark = pytest.mark.timeout(60)

T0 = 1_800_000_000.0
REPLY = b'{"status":"ok","digest":5,"ids":{},"ts":1.0,"busy":[]}'
OTHER_REPLY = b'{"status":"ok","digest":6,"ids":{},"ts":2.0,"busy":[]}'


@pytest.fixture
def stores(redis_server):
    """A factory of RedisStores on the test's server (loaded once, as a broker starts), closed after."""
    made: list[RedisStore] = []

    def make(**kw) -> RedisStore:
        s = RedisStore(redis_server.url, **kw)
        s.load(0.0)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_a_redis_without_fsync_at_every_write_is_refused_unless_weak_durability_is_accepted(redis_server, caplog):
    redis_server.client().config_set("appendfsync", "everysec")
    with pytest.raises(StoreError, match="appendfsync is 'everysec', set `appendfsync always`") as refused:
        RedisStore(redis_server.url)
    assert "--accept-weak-durability" in str(refused.value)  # the broker's flag, by its name
    with caplog.at_level(logging.WARNING, logger="zmq_chat.broker.redisstore"):
        store = RedisStore(redis_server.url, weak_durability=True)
    store.close()
    assert "WEAKER DURABILITY" in caplog.text and "appendfsync" in caplog.text
    redis_server.client().config_set("appendfsync", "always")
    RedisStore(redis_server.url).close()  # the setting the store asks for is accepted


def test_an_unreachable_redis_is_a_store_error():
    with pytest.raises(StoreError, match="cannot use the Redis store"):
        RedisStore(f"redis://127.0.0.1:{free_port()}/0")


def test_the_epoch_is_kept_by_the_data_and_new_when_the_data_is_gone(redis_server, stores, tmp_path):
    first = stores()
    epoch = first.epoch
    assert len(epoch) == 32 and stores().load(0.0).epoch == epoch  # another broker: the same log
    redis_server.restart()  # kill -9 and start: the append-only file keeps it
    assert stores().load(0.0).epoch == epoch
    redis_server.client().flushall()
    wiped = stores().load(0.0).epoch
    assert wiped not in ("", epoch)
    from tests.redis_server import running_redis

    with running_redis(tmp_path / "other") as other:  # a new server directory: a new log
        store = RedisStore(other.url)
        try:
            assert store.load(0.0).epoch not in ("", epoch, wiped)
        finally:
            store.close()


def test_a_store_whose_epoch_is_gone_writes_nothing(redis_server, stores):
    old = stores()
    redis_server.client().flushall()
    new = stores()  # makes a new epoch
    batch = WriteBatch()
    batch.users.append(UserRecord("alice", "$a", T0))
    batch.events.append((0, bcast_body("alice", "c1")))
    with pytest.raises(StoreError, match="another epoch"):
        old.commit(batch)
    with pytest.raises(StoreError, match="another epoch"):
        old.claim_user(UserRecord("bob", "$b", T0))
    with pytest.raises(StoreError, match="another epoch"):
        old.refresh()
    snap = new.load(0.0)
    assert snap.users == {} and snap.seq == 0


def test_a_send_id_stored_by_one_broker_is_a_duplicate_for_another(stores):
    a, b = stores(), stores()
    found = []
    for store, text in ((a, "first"), (b, "retried on the other broker")):
        base = store.load(0.0).last_mail_id
        batch = WriteBatch()
        batch.mail.append(m.PrivateMessage(base + 1, "alice", "bob", T0, text, "c1"))
        batch.sends.append(SendRecord("alice", "c1", T0, OTHER_REPLY if store is b else REPLY, base + 1))
        found.append(store.commit(batch))
    assert found == [None, {("alice", "c1")}]  # the second commit says which send it did not store
    for store in (a, b):
        assert [x.text for x in store.mail_after("bob", 0, 10)] == ["first"]
        snap = store.load(0.0)
        assert snap.mail_counts == {"bob": 1} and [(x.cid, x.reply) for x in snap.sends] == [("c1", REPLY)]
    assert a.db.xlen("zc:feed") == 0  # bob is online nowhere: no mail notice (his next login reads the mailbox)
    entries = a.db.xrange(f"zc:feed:{b.broker_id}")  # the dup notice: for b only
    assert [(f[b"k"], f[b"o"].decode()) for _, f in entries] == [(b"dup", b.broker_id)]


def test_two_brokers_committing_at_once_get_one_gapless_sequence(stores):
    brokers = [stores(), stores()]
    rounds, per_batch = 100, 3

    def commit_all(store: RedisStore, tag: str) -> None:
        for r in range(rounds):
            batch = WriteBatch()
            batch.events += [(0, bcast_body(tag, f"{tag}{r}-{k}")) for k in range(per_batch)]
            store.commit(batch)

    threads = [threading.Thread(target=commit_all, args=(s, f"user{i}")) for i, s in enumerate(brokers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    rows = brokers[0].event_bodies_after(0, 10_000)
    total = 2 * rounds * per_batch
    assert [seq for seq, _ in rows] == list(range(1, total + 1))
    events = [decode_stored_event(body) for _, body in rows]
    assert [e.seq for e in events] == list(range(1, total + 1))  # each body carries its own seq
    for tag in ("user0", "user1"):  # each broker's events in its commit order
        assert [e.cid for e in events if e.user == tag] == [f"{tag}{r}-{k}" for r in range(rounds) for k in range(3)]
    assert brokers[1].load(0.0).seq == total


def test_refresh_reads_the_others_state_again_without_a_lease_and_leaves_the_positions(stores):
    a, b = stores(), stores()
    mine = WriteBatch()
    mine.notices.append(OnlineNotice("dora", b.broker_id, T0, False))
    b.commit(mine)
    positions = b._positions
    base = a.load(0.0).last_mail_id
    batch = WriteBatch()
    batch.users += [UserRecord("alice", "$a", T0), UserRecord("bob", "$b", T0)]
    batch.mail += [m.PrivateMessage(base + i, "alice", "bob", T0, f"m{i}", f"c{i}") for i in (1, 2)]
    batch.sends.append(SendRecord("alice", "c1", T0, REPLY, base + 1))
    batch.events.append((0, bcast_body("alice", "b1")))
    batch.last_seen.append(("alice", T0 + 5, True, 1))
    batch.notices.append(OnlineNotice("carol", a.broker_id, T0 + 1, True))
    a.commit(batch)
    acked = WriteBatch()
    acked.acks.append(("bob", [base + 1]))
    a.commit(acked)
    mail_ids = int(b.db.get("zc:mailid"))  # (a's load took a lease)
    fresh = b.refresh()
    assert fresh.users.keys() == {"alice", "bob"} and fresh.seq == 1 and fresh.mail_counts == {"bob": 1}
    alice = fresh.users["alice"]
    assert (alice.last_seen, alice.last_seen_hidden, alice.last_seq) == (T0 + 5, True, 1)
    assert fresh.online == {"carol": (a.broker_id, T0 + 1, True)}  # b's own dora is not "elsewhere"
    assert (fresh.last_mail_id, fresh.mail_id_limit, fresh.sends, fresh.epoch) == (0, 0, [], b.epoch)
    assert b._positions == positions and int(b.db.get("zc:mailid")) == mail_ids  # no lease, same positions


def test_the_mail_id_leases_of_two_brokers_do_not_overlap(stores):
    snaps = [s.load(0.0) for s in (stores(), stores(), stores())]
    ranges = sorted((x.last_mail_id, x.mail_id_limit) for x in snaps)
    for (low, high), (next_low, _) in zip(ranges, ranges[1:], strict=False):
        assert low < high <= next_low


def test_a_new_account_is_claimed_once_across_brokers(stores):
    a, b = stores(), stores()
    assert a.claim_user(UserRecord("alice", "$first", T0)) is True
    assert b.claim_user(UserRecord("alice", "$second", T0 + 1)) is False
    assert b.load(0.0).users["alice"].hash == "$first"


def test_a_prune_of_many_send_ids_is_spread_over_commits(stores):
    store = stores()
    count = redislua.PRUNE_SENDS * 2 + 500
    batch = WriteBatch()
    batch.sends += [SendRecord("alice", f"c{i}", T0 + i, REPLY) for i in range(count)]
    store.commit(batch)
    prune = WriteBatch()
    prune.prune = (10, T0 + count)  # every send id is older
    store.commit(prune)
    left = [len(store.load(0.0).sends)]
    for _ in range(3):  # later commits, even empty ones, go on with it
        store.commit(WriteBatch())
        left.append(len(store.load(0.0).sends))
    assert left == [count - redislua.PRUNE_SENDS, 500, 0, 0]


def test_what_a_commit_acknowledged_survives_kill_9_of_redis(redis_server, stores):
    store = stores()
    base = store.load(0.0).last_mail_id
    for i in range(1, 51):
        batch = WriteBatch()
        if i == 1:
            batch.users += [UserRecord("alice", "$a", T0), UserRecord("bob", "$b", T0)]
        batch.mail.append(m.PrivateMessage(base + i, "alice", "bob", T0 + i, f"message {i}", f"c{i}"))
        batch.sends.append(SendRecord("alice", f"c{i}", T0 + i, REPLY, base + i))
        batch.events.append((0, bcast_body("alice", f"b{i}")))
        if i % 10 == 0:
            batch.acks.append(("bob", [base + i - 1]))
        store.commit(batch)  # returned: acknowledged
    before = store.load(0.0)
    redis_server.kill9()
    redis_server.start()
    again = stores()
    after = again.load(0.0)
    assert after.epoch == before.epoch and after.seq == 50 and after.users.keys() == {"alice", "bob"}
    assert after.mail_counts == {"bob": 45} and len(after.sends) == 50
    assert [x.id - base for x in again.mail_after("bob", 0, 100)] == [i for i in range(1, 51) if i % 10 != 9]
    assert [s for s, _ in again.event_bodies_after(0, 100)] == list(range(1, 51))
    assert after.last_mail_id >= before.mail_id_limit  # the lease survived too: no id is handed out twice


# -- Redis going away: idempotent commits, retries, fast reads ------------------------------------------
def _mail_batch(store: RedisStore, i: int, base: int) -> WriteBatch:
    """Mail alice -> bob number `i` with its send id, a broadcast and a presence event."""
    batch = WriteBatch()
    batch.mail.append(m.PrivateMessage(base + i, "alice", "bob", T0 + i, f"message {i}", f"c{i}"))
    batch.sends.append(SendRecord("alice", f"c{i}", T0 + i, REPLY, base + i))
    batch.events.append((0, bcast_body("alice", f"b{i}")))
    batch.events.append((0, encode_json(m.Event(0, T0, "presence", "carol", event="login"))))
    return batch


def test_a_commit_whose_reply_was_lost_is_not_written_again_when_retried(stores):
    store, bobs = stores(), stores()
    online = WriteBatch()  # bob is in session on the other broker: it gets a notice of his mail
    online.notices.append(OnlineNotice("bob", bobs.broker_id, T0, False))
    bobs.commit(online)
    base = store.load(0.0).last_mail_id
    batch = _mail_batch(store, 1, base)
    store.commit(batch)  # commit number 1
    retried = [store.epoch, store.broker_id, store.commits, msgspec.msgpack.encode(store._encode(batch))]
    assert store._call(store._commit, retried) == [-1]  # as a retry after a lost reply sends it: applied already
    assert [x.text for x in store.mail_after("bob", 0, 10)] == ["message 1"]
    assert [s for s, _ in store.event_bodies_after(0, 10)] == [1, 2]
    snap = store.load(0.0)
    assert snap.mail_counts == {"bob": 1} and [(x.cid, x.reply) for x in snap.sends] == [("c1", REPLY)]
    assert [f[b"k"] for _, f in store.db.xrange(f"zc:feed:{bobs.broker_id}")] == [b"mail"]  # once
    assert not store.db.exists(f"zc:feed:{store.broker_id}")  # no dup notice either
    store.commit(_mail_batch(store, 2, base))  # the next number is written
    assert [x.text for x in store.mail_after("bob", 0, 10)] == ["message 1", "message 2"]
    assert int(store.db.get(f"zc:applied:{store.broker_id}")) == store.commits == 2
    assert 0 < store.db.ttl(f"zc:applied:{store.broker_id}") <= redislua.APPLIED_TTL


def test_a_claim_whose_reply_was_lost_is_still_the_claimers_when_retried(stores):
    store = stores()
    record = UserRecord("alice", "$argon2id$salt1$hash", T0)
    assert store.claim_user(record) is True
    assert store.claim_user(record) is True  # the same record (same salt): this claim's retry
    assert store.claim_user(UserRecord("alice", "$argon2id$salt2$hash", T0)) is False
    assert [f[b"k"] for _, f in store.db.xrange("zc:feed")] == [b"user"]


def _commit_in_thread(store: RedisStore, batch: WriteBatch) -> tuple[threading.Thread, list]:
    """Run store.commit(batch) on a thread (as the broker's writer thread); the list gets its
    exception, if any."""
    errors: list = []

    def run() -> None:
        try:
            store.commit(batch)
        except Exception as exc:  # reported to the test through `errors`
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _wait_for(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_commit_waits_while_redis_is_down_and_is_applied_once_it_is_back(redis_server, stores, caplog):
    store = stores()
    base = store.load(0.0).last_mail_id
    store.commit(_mail_batch(store, 1, base))
    redis_server.kill9()
    with caplog.at_level(logging.INFO, logger="zmq_chat.broker.redisstore"):
        thread, errors = _commit_in_thread(store, _mail_batch(store, 2, base))
        _wait_for(lambda: "unreachable" in caplog.text, "the outage's warning")
        with pytest.raises(redis.ConnectionError):  # reads fail (the loop answers E_INTERNAL), they do not hang
            store.mail_after("bob", 0, 10)
        with pytest.raises(redis.ConnectionError):
            store.claim_user(UserRecord("dave", "$d", T0))
        assert thread.is_alive()  # not returned: nothing is acknowledged while Redis is away
        redis_server.start()
        thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "reachable again" in caplog.text
    assert [x.text for x in store.mail_after("bob", 0, 10)] == ["message 1", "message 2"]
    assert [s for s, _ in store.event_bodies_after(0, 10)] == [1, 2, 3, 4]
    assert store.claim_user(UserRecord("dave", "$d", T0)) is True  # claims work again too
    store.commit(_mail_batch(store, 3, base))  # and later commits, with no error on the way
    assert len(store.mail_by_ids("bob", [base + 1, base + 2, base + 3])) == 3


def test_a_commit_waits_while_redis_loads_its_data_after_a_restart(redis_server, stores, caplog):
    store = stores()
    base = store.load(0.0).last_mail_id
    extra = redis_server.slow_load(keys=3000)  # about 3 s of loading
    redis_server.kill9()
    redis_server.start(*extra, wait=False)
    probe = redis.Redis.from_url(redis_server.url, retry=Retry(NoBackoff(), 0))

    def loading() -> bool:
        try:
            probe.get("zc:epoch")
        except redis.BusyLoadingError:
            return True
        except redis.ConnectionError:  # not listening yet
            pass
        return False

    try:
        _wait_for(loading, "Redis to load its data")
    finally:
        probe.close()
    with caplog.at_level(logging.INFO, logger="zmq_chat.broker.redisstore"):
        store.commit(_mail_batch(store, 1, base))  # meets LOADING, retries until the data is in
    assert "loading" in caplog.text.lower() and "reachable again" in caplog.text
    assert [x.text for x in store.mail_after("bob", 0, 10)] == ["message 1"]


def test_a_redis_away_longer_than_the_outage_limit_is_a_store_error(redis_server):
    store = RedisStore(redis_server.url, outage=0.3)
    try:
        store.load(0.0)
        redis_server.kill9()
        with pytest.raises(StoreError, match=r"Redis unreachable for 0.3 s"):
            store.commit(_mail_batch(store, 1, 0))
    finally:
        store.close()


def test_a_commit_waits_while_redis_is_busy_with_a_long_script(redis_server, stores, caplog):
    store = stores()
    base = store.load(0.0).last_mail_id
    other = redis_server.client()
    other.config_set("lua-time-limit", 10)  # ms: Redis answers BUSY to others after that
    long_script = "local t = redis.call('TIME') local stop = t[1] * 1e6 + t[2] + 1.5e6\n" \
                  "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= stop return 1"
    runner = threading.Thread(target=lambda: redis_server.client().eval(long_script, 0), daemon=True)
    runner.start()
    _wait_for(lambda: _busy(redis_server), "the script to keep Redis busy")
    with caplog.at_level(logging.INFO, logger="zmq_chat.broker.redisstore"):
        store.commit(_mail_batch(store, 1, base))
    runner.join(timeout=10)
    assert "BUSY" in caplog.text and "reachable again" in caplog.text
    assert [x.text for x in store.mail_after("bob", 0, 10)] == ["message 1"]


def _busy(server) -> bool:
    probe = redis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0))
    try:
        probe.get("zc:epoch")
    except redis.ResponseError as exc:
        return str(exc).startswith("BUSY ")
    finally:
        probe.close()
    return False


def test_the_later_login_keeps_its_online_entry_whichever_commits_first(stores, redis_server):
    c, d, e = stores(), stores(), stores()
    r = redis_server.client()
    r.sadd("zc:brokers", c.broker_id, d.broker_id)
    d.commit(WriteBatch(notices=[OnlineNotice("u", d.broker_id, 200.0, False)]))  # the later login, committed first
    c.commit(WriteBatch(notices=[OnlineNotice("u", c.broker_id, 100.0, False)]))  # the earlier one, committed after
    c.commit(WriteBatch(notices=[OfflineNotice("u", c.broker_id)]))  # C ends its session, replaced
    assert msgspec.json.decode(r.hget("zc:online", "u"))["broker"] == d.broker_id
    e.commit(WriteBatch(mail=[m.PrivateMessage(3 * 2**40, "x", "u", 1.0, "t", "k")]))
    assert [f[b"k"] for _, f in r.xrange(f"zc:feed:{d.broker_id}")] == [b"mail"]  # u's broker hears of it
