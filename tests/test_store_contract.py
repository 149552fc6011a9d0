"""The store contract (broker.storage.Store) pinned once and run against every implementation:
SqliteStore in a temporary directory, MemoryStore, and RedisStore on a real redis-server (the
`redis_server` fixture; skipped where none is installed). Each test commits WriteBatches and checks
what load() and the reads (mail_after, mail_by_ids, event_bodies_after) return afterwards.

Where a shared store (Store.shared, RedisStore) truly differs, the test says so: it numbers the
events itself (the batch carries seq 0), hands out mail ids from a lease (last_mail_id is the
lease's start, not the newest stored id), and a send id stored before is a duplicate, not a new
reply (tests at the end)."""

from __future__ import annotations

import sqlite3
import time

import pytest

from zmq_chat.broker.feed import DupNotice
from zmq_chat.broker.memstore import MemoryStore
from zmq_chat.broker.redisstore import RedisStore
from zmq_chat.broker.storage import SendRecord, Snapshot, StoreError, UserRecord, WriteBatch
from zmq_chat.broker.store import SCHEMA_VERSION, SqliteStore
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.limits import MAX_COUNTER
from zmq_chat.protocol.wire import decode_stored_event, encode_json

pytestmark = pytest.mark.timeout(30)

T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "memory", "redis"])
def store(request, tmp_path):
    if request.param == "redis":
        s = RedisStore(request.getfixturevalue("redis_server").url)
        s.load(0.0)  # as a broker does before its first commit: the tests' mail ids are in its lease
    else:
        s = SqliteStore(tmp_path) if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


@pytest.fixture
def shared_store(redis_server):
    """The shared implementations (RedisStore), for the parts of the contract only they have."""
    s = RedisStore(redis_server.url)
    yield s
    s.close()


def _mail_ids_past(store, snap: Snapshot, newest: int) -> bool:
    """Whether `snap` hands out only mail ids above `newest` (the highest stored): a store of one
    broker says exactly `newest` and may go up to MAX_COUNTER; a shared one leases a block above
    every id handed out before."""
    if not store.shared:
        return snap.last_mail_id == newest and snap.mail_id_limit == MAX_COUNTER
    return newest <= snap.last_mail_id < snap.mail_id_limit <= MAX_COUNTER


def _mail(mid: int, sender: str, to: str, text: str = "", ts: float = T0) -> m.PrivateMessage:
    return m.PrivateMessage(mid, sender, to, ts, text or f"text {mid}", f"cid{mid}")


def _event(seq: int) -> m.Event:
    return m.Event(seq, T0 + seq, "bcast", "alice", text=f"bcast {seq}", cid=f"b{seq}")


def _send(sender: str, cid: str, ts: float) -> SendRecord:
    return SendRecord(sender, cid, ts, b'{"status":"ok","digest":1,"seq":1,"ts":1.0}')


def _seed(store) -> None:
    """Two accounts, three send ids, mail for bob (1, 2, 4) and alice (3, 5), events 1..5."""
    batch = WriteBatch()
    batch.users += [UserRecord("alice", "$argon2id$a", T0, last_seq=0), UserRecord("bob", "$argon2id$b", T0 + 1)]
    batch.sends += [_send("alice", "s1", T0), _send("alice", "s2", T0 + 10), _send("bob", "s1", T0 + 20)]
    batch.mail += [_mail(1, "alice", "bob"), _mail(2, "alice", "bob"), _mail(3, "bob", "alice"),
                   _mail(4, "alice", "bob"), _mail(5, "bob", "alice")]
    for seq in range(1, 6):
        batch.add_event(_event(seq))
    store.commit(batch)


def _empty(snap: Snapshot) -> Snapshot:
    """An empty store's Snapshot with the epoch and mail id range of `snap`."""
    return Snapshot(epoch=snap.epoch, last_mail_id=snap.last_mail_id, mail_id_limit=snap.mail_id_limit)


def test_an_empty_store_loads_empty_and_reads_nothing(store):
    snap = store.load(0.0)
    assert snap == _empty(snap) and len(snap.epoch) == 32 and _mail_ids_past(store, snap, 0)
    assert store.mail_after("bob", 0, 10) == []
    assert store.mail_by_ids("bob", [1, 2]) == []
    assert store.event_bodies_after(0, 10) == []
    store.commit(WriteBatch())  # an empty batch is fine and changes nothing
    again = store.load(0.0)
    assert again == _empty(again) and again.epoch == snap.epoch  # the epoch stays while the log does


def test_a_committed_batch_is_loaded(store):
    _seed(store)
    snap = store.load(0.0)
    assert snap.users == {"alice": UserRecord("alice", "$argon2id$a", T0),
                          "bob": UserRecord("bob", "$argon2id$b", T0 + 1)}
    assert snap.seq == 5 and _mail_ids_past(store, snap, 5)
    assert snap.mail_counts == {"bob": 3, "alice": 2}
    assert [(x.sender, x.cid, x.ts) for x in snap.sends] == [("alice", "s1", T0), ("alice", "s2", T0 + 10),
                                                             ("bob", "s1", T0 + 20)]
    assert snap.sends[0].reply == _send("alice", "s1", T0).reply


def test_mail_after_pages_one_recipients_mailbox_oldest_first(store):
    _seed(store)
    assert store.mail_after("bob", 0, 10) == [_mail(1, "alice", "bob"), _mail(2, "alice", "bob"),
                                              _mail(4, "alice", "bob")]
    assert [x.id for x in store.mail_after("bob", 0, 2)] == [1, 2]  # the limit
    assert [x.id for x in store.mail_after("bob", 2, 2)] == [4]  # after an id (3 is alice's)
    assert [x.id for x in store.mail_after("alice", 0, 10)] == [3, 5]
    assert store.mail_after("bob", 4, 10) == [] and store.mail_after("carol", 0, 10) == []


def test_a_group_messages_recipients_come_back_with_each_copy(store):
    _seed(store)
    base = store.load(0.0).last_mail_id
    group = ["bob", "carol"]
    batch = WriteBatch()
    batch.mail += [m.PrivateMessage(base + 1 + i, "alice", to, T0, "team", "g1", group) for i, to in enumerate(group)]
    store.commit(batch)
    copies = store.mail_after("bob", base, 10) + store.mail_by_ids("carol", [base + 2])
    assert [(x.to, x.group) for x in copies] == [("bob", group), ("carol", group)]
    assert all(x.group == [] for x in store.mail_after("bob", 0, 10) if x.id <= base)  # a message to one: none


def test_mail_by_ids_returns_only_the_recipients_own_messages(store):
    _seed(store)
    assert [x.id for x in store.mail_by_ids("bob", [4, 3, 1, 99])] == [1, 4]  # 3 is alice's, 99 unknown
    assert [x.id for x in store.mail_by_ids("alice", [1, 2, 4])] == []
    assert store.mail_by_ids("bob", []) == []
    assert store.mail_by_ids("alice", [5, 3]) == [_mail(3, "bob", "alice"), _mail(5, "bob", "alice")]


def test_event_bodies_after_are_the_stored_json_oldest_first(store):
    _seed(store)
    rows = store.event_bodies_after(2, 2)
    assert [seq for seq, _ in rows] == [3, 4]
    assert [decode_stored_event(bytes(body)) for _, body in rows] == [_event(3), _event(4)]
    assert [seq for seq, _ in store.event_bodies_after(0, 100)] == [1, 2, 3, 4, 5]
    assert store.event_bodies_after(5, 10) == []


def test_acks_delete_only_the_recipients_own_rows_and_mail_ids_are_never_reused(store):
    _seed(store)
    batch = WriteBatch()
    batch.acks.append(("bob", [1, 3, 4, 99]))  # 3 is alice's, 99 unknown
    store.commit(batch)
    assert [x.id for x in store.mail_after("bob", 0, 10)] == [2]
    assert [x.id for x in store.mail_after("alice", 0, 10)] == [3, 5]
    batch = WriteBatch()
    batch.acks += [("alice", [3, 5]), ("bob", [2])]
    store.commit(batch)
    snap = store.load(0.0)
    assert snap.mail_counts == {} and _mail_ids_past(store, snap, 5)  # the newest id stays used


def test_one_batch_applies_in_order_users_mail_events_acks_last_seen(store):
    batch = WriteBatch()
    batch.users.append(UserRecord("carol", "$argon2id$c", T0, last_seq=7))
    batch.mail += [_mail(1, "carol", "carol"), _mail(2, "carol", "carol")]
    batch.add_event(_event(1))
    batch.acks.append(("carol", [1]))  # mail of the same batch, deleted by it
    batch.last_seen.append(("carol", T0 + 50, True, 1))  # the account of the same batch
    store.commit(batch)
    snap = store.load(0.0)
    assert snap.users["carol"] == UserRecord("carol", "$argon2id$c", T0, T0 + 50, True, 1)
    assert snap.mail_counts == {"carol": 1} and _mail_ids_past(store, snap, 2) and snap.seq == 1
    assert [x.id for x in store.mail_after("carol", 0, 10)] == [2]


def test_last_seen_updates_an_account_and_ignores_unknown_names(store):
    _seed(store)
    batch = WriteBatch()
    batch.last_seen += [("bob", T0 + 100, False, 4), ("bob", T0 + 200, True, 5), ("nobody", T0, False, 1)]
    store.commit(batch)
    snap = store.load(0.0)
    assert snap.users["bob"] == UserRecord("bob", "$argon2id$b", T0 + 1, T0 + 200, True, 5)  # the last one wins
    assert snap.users["alice"].last_seen is None and set(snap.users) == {"alice", "bob"}


def test_a_stored_account_keeps_its_first_record_and_a_send_id_used_again_its_stores_rule(store):
    """A store of one broker takes the reply of a send id used again (the core forgot the id, so
    it is a new message); a shared store keeps the first (another broker may be the one that
    forgot it: test_a_shared_store_stores_a_send_id_once)."""
    _seed(store)
    batch = WriteBatch()
    batch.users.append(UserRecord("alice", "$argon2id$other", T0 + 99))
    batch.sends.append(SendRecord("alice", "s1", T0 + 30, b'{"status":"ok","digest":2}'))  # forgotten in memory
    store.commit(batch)
    snap = store.load(0.0)
    assert snap.users["alice"].hash == "$argon2id$a"
    first = ("s1", T0, _send("alice", "s1", T0).reply)
    again = ("s1", T0 + 30, b'{"status":"ok","digest":2}')
    s2 = ("s2", T0 + 10, _send("alice", "s2", T0 + 10).reply)
    assert [(x.cid, x.ts, x.reply) for x in snap.sends if x.sender == "alice"] == (
        [first, s2] if store.shared else [s2, again])


def test_send_ids_are_loaded_only_since_sends_since_oldest_first(store):
    _seed(store)
    assert [(x.sender, x.cid) for x in store.load(T0 + 10).sends] == [("alice", "s2"), ("bob", "s1")]
    assert [(x.sender, x.cid) for x in store.load(T0 + 10.5).sends] == [("bob", "s1")]
    assert store.load(T0 + 21).sends == []


def test_prune_keeps_the_newest_events_and_forgets_old_send_ids(store):
    _seed(store)
    batch = WriteBatch()
    for seq in range(6, 11):
        batch.add_event(_event(seq))
    batch.prune = (3, T0 + 10)  # keep 3 events; forget send ids stored before T0 + 10
    store.commit(batch)
    assert [seq for seq, _ in store.event_bodies_after(0, 100)] == [8, 9, 10]
    snap = store.load(0.0)
    assert snap.seq == 10  # the counter does not go back
    assert [(x.sender, x.cid) for x in snap.sends] == [("alice", "s2"), ("bob", "s1")]
    assert snap.mail_counts == {"bob": 3, "alice": 2}  # mail is not pruned
    batch = WriteBatch()
    batch.prune = (100, T0)  # more events to keep than there are: nothing goes
    store.commit(batch)
    assert [seq for seq, _ in store.event_bodies_after(0, 100)] == [8, 9, 10]


def test_a_reopened_sqlite_store_sees_the_same_state(tmp_path):
    first = SqliteStore(tmp_path)
    _seed(first)
    batch = WriteBatch()
    batch.acks.append(("bob", [2]))
    batch.last_seen.append(("alice", T0 + 5, False, 3))
    batch.prune = (4, T0 + 1)
    first.commit(batch)
    before = _state(first)
    first.close()
    again = SqliteStore(tmp_path)
    try:
        assert _state(again) == before
        assert before[0].seq == 5 and before[0].mail_counts == {"bob": 2, "alice": 2} and len(before[0].sends) == 2
    finally:
        again.close()


def test_sqlite_refuses_a_newer_schema(tmp_path):
    SqliteStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / "chat.sqlite3")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(tmp_path)


def test_sqlite_refuses_an_unknown_sync_mode(tmp_path):
    with pytest.raises(ValueError):
        SqliteStore(tmp_path, synchronous="OFF")


def _state(store) -> tuple:
    """Everything the contract lets a caller see (for comparing two opens of one database)."""
    snap = store.load(0.0)
    mail = {name: store.mail_after(name, 0, 1000) for name in snap.users}
    return snap, mail, [(s, bytes(b)) for s, b in store.event_bodies_after(0, 1000)]


def test_sqlite_holds_its_directory_against_a_second_writer(tmp_path):
    first = SqliteStore(tmp_path)
    with pytest.raises(StoreError, match="in use by another process"):
        SqliteStore(tmp_path)
    first.close()
    SqliteStore(tmp_path).close()  # released by close()


def test_load_keeps_only_the_newest_send_ids_the_core_can_hold(store, monkeypatch):
    import zmq_chat.broker.memstore
    import zmq_chat.broker.redisstore
    import zmq_chat.broker.store

    for module in (zmq_chat.broker.store, zmq_chat.broker.memstore, zmq_chat.broker.redisstore):
        monkeypatch.setattr(module, "MAX_IDS", 2)
    _seed(store)
    assert [(x.sender, x.cid) for x in store.load(0.0).sends] == [("alice", "s2"), ("bob", "s1")]



# -- private send ids live with their mail (schema 2) ----------------------------------------------
def _private(sender: str, mail_id: int, ts: float = T0) -> SendRecord:
    """The send id of _mail(mail_id, sender, ..., ts), kept in that row."""
    return SendRecord(sender, f"cid{mail_id}", ts, b'{"status":"ok","digest":7,"ids":{},"ts":1.0,"busy":[]}', mail_id)


def test_a_private_send_id_stays_loadable_after_its_mail_is_acked_until_pruned(store):
    batch = WriteBatch()
    batch.users += [UserRecord("alice", "$a", T0), UserRecord("bob", "$b", T0)]
    batch.mail += [_mail(1, "alice", "bob", ts=T0), _mail(2, "alice", "bob", ts=T0 + 5)]
    batch.sends += [_private("alice", 1, T0), _private("alice", 2, T0 + 5)]
    store.commit(batch)
    acks = WriteBatch()
    acks.acks.append(("bob", [1, 2]))
    store.commit(acks)
    snap = store.load(0.0)
    assert snap.mail_counts == {} and store.mail_after("bob", 0, 10) == [] and store.mail_by_ids("bob", [1, 2]) == []
    assert [(x.sender, x.cid, x.ts, x.reply) for x in snap.sends] == [
        ("alice", "cid1", T0, _private("alice", 1).reply), ("alice", "cid2", T0 + 5, _private("alice", 2).reply)]
    prune = WriteBatch()
    prune.prune = (1000, T0 + 1)
    store.commit(prune)
    assert [x.cid for x in store.load(0.0).sends] == ["cid2"]  # inside the window: kept
    assert _mail_ids_past(store, store.load(0.0), 2)


def test_a_group_send_is_one_send_id_and_a_record_without_its_row_is_kept_too(store):
    batch = WriteBatch()
    batch.mail += [_mail(1, "alice", "bob"), _mail(2, "alice", "carol"), _mail(3, "alice", "dave")]
    for x in batch.mail:
        x.cid = "group"
    stray = SendRecord("alice", "stray", T0 + 1, b"{}", 99)  # no row 99 in the batch
    batch.sends += [SendRecord("alice", "group", T0, b"{}", 1), stray]
    store.commit(batch)
    assert [(x.sender, x.cid) for x in store.load(0.0).sends] == [("alice", "group"), ("alice", "stray")]
    assert store.load(0.0).mail_counts == {"bob": 1, "carol": 1, "dave": 1}


def test_unacked_mail_outlives_the_send_id_window_and_an_old_ack_still_removes_it(store):
    batch = WriteBatch()
    batch.mail += [_mail(1, "alice", "bob", ts=T0), _mail(2, "alice", "bob", ts=T0 + 100)]
    batch.sends += [_private("alice", 1, T0), _private("alice", 2, T0 + 100)]
    store.commit(batch)
    prune = WriteBatch()
    prune.prune = (1000, T0 + 50)
    store.commit(prune)
    assert [x.id for x in store.mail_after("bob", 0, 10)] == [1, 2]  # mail is not pruned
    assert [x.cid for x in store.load(0.0).sends] == ["cid2"]
    acks = WriteBatch()
    acks.acks.append(("bob", [1, 2]))
    store.commit(acks)
    assert store.mail_after("bob", 0, 10) == [] and store.load(0.0).mail_counts == {}
    assert [x.cid for x in store.load(0.0).sends] == ["cid2"]


# -- shared stores (Store.shared): what only they do ---------------------------------------------------
def _bcast(user: str, cid: str, text: str = "hi") -> bytes:
    """A broadcast's Event body as the core of a broker on a shared store hands it over: seq 0."""
    return encode_json(m.Event(0, T0, "bcast", user, text=text, cid=cid))


BCAST_REPLY = b'{"status":"ok","digest":3,"seq":0,"ts":1800000000.0}'


def _items(backplane, want, timeout: float = 10.0) -> list:
    """Drain `backplane` until `want(items so far)` holds (a deadline poll); returns the items."""
    deadline = time.monotonic() + timeout
    items: list = []
    while not want(items):
        assert time.monotonic() < deadline, f"the backplane never delivered what was waited for: {items}"
        time.sleep(0.01)
        items += backplane.drain()
    return items


def test_a_shared_store_numbers_the_events_itself_and_rewrites_their_seq(shared_store):
    store = shared_store
    assert store.shared and store.load(0.0).seq == 0
    for first in (1, 4):
        batch = WriteBatch()
        for k in range(3):
            batch.events.append((0, _bcast("alice", f"c{first + k}")))  # as the core hands them over: seq 0
        store.commit(batch)
    rows = store.event_bodies_after(0, 100)
    assert [seq for seq, _ in rows] == [1, 2, 3, 4, 5, 6]
    assert [(decode_stored_event(body).seq, decode_stored_event(body).cid) for _, body in rows] == [
        (n, f"c{n}") for n in range(1, 7)]
    assert store.load(0.0).seq == 6


def test_a_shared_store_writes_a_broadcasts_seq_into_its_stored_reply(shared_store):
    store = shared_store
    batch = WriteBatch()
    batch.events.append((0, _bcast("alice", "first")))
    batch.sends.append(SendRecord("alice", "b1", T0, BCAST_REPLY))
    batch.events.append((0, _bcast("alice", "b1")))
    store.commit(batch)
    (record,) = store.load(0.0).sends
    assert record.reply == BCAST_REPLY.replace(b'"seq":0,', b'"seq":2,')


def test_a_shared_store_stores_a_send_id_once(shared_store):
    """A send id already stored (by any broker) makes a later send with it a duplicate: none of its
    mail or event is stored, the first reply stays, and the committing broker gets a DupNotice."""
    store = shared_store
    first = WriteBatch()
    first.users += [UserRecord("alice", "$a", T0), UserRecord("bob", "$b", T0), UserRecord("carol", "$c", T0)]
    first.mail.append(_mail(1, "alice", "bob"))
    first.sends.append(_private("alice", 1))
    first.sends.append(SendRecord("alice", "b1", T0, BCAST_REPLY))
    first.events.append((0, _bcast("alice", "b1")))
    store.commit(first)
    snap = store.load(0.0)
    backplane = store.backplane(ttl=10.0)
    backplane.start(lambda: None)
    try:
        again = WriteBatch()
        group = [_mail(snap.last_mail_id + 1, "alice", "bob"), _mail(snap.last_mail_id + 2, "alice", "carol")]
        for x in group:
            x.cid = "cid1"  # the send id of mail 1: a retry of it
        again.mail += group
        again.sends.append(SendRecord("alice", "cid1", T0 + 5, b'{"status":"ok","digest":9}', group[0].id))
        again.sends.append(SendRecord("alice", "b1", T0 + 5, b'{"status":"ok","digest":9,"seq":0}'))
        again.events.append((0, _bcast("alice", "b1", "again")))
        again.events.append((0, _bcast("alice", "b2")))  # not a duplicate: logged
        store.commit(again)
        dups = _items(backplane, lambda items: len([x for x in items if isinstance(x, DupNotice)]) == 2)
    finally:
        backplane.close()
    assert {(x.sender, x.cid, x.reply) for x in dups if isinstance(x, DupNotice)} == {
        ("alice", "cid1", _private("alice", 1).reply.decode()),
        ("alice", "b1", BCAST_REPLY.replace(b'"seq":0,', b'"seq":1,').decode())}
    after = store.load(0.0)
    assert after.mail_counts == {"bob": 1} and [x.id for x in store.mail_after("bob", 0, 10)] == [1]
    assert store.mail_after("carol", 0, 10) == []
    assert [decode_stored_event(b).cid for _, b in store.event_bodies_after(0, 10)] == ["b1", "b2"]
    assert {(x.cid, x.reply) for x in after.sends} == {("cid1", _private("alice", 1).reply),
                                                      ("b1", BCAST_REPLY.replace(b'"seq":0,', b'"seq":1,'))}


def test_each_load_of_a_shared_store_leases_new_mail_ids(shared_store):
    ranges = [(s.last_mail_id, s.mail_id_limit) for s in (shared_store.load(0.0), shared_store.load(0.0))]
    (low1, high1), (low2, high2) = ranges
    assert low1 < high1 <= low2 < high2 <= MAX_COUNTER
