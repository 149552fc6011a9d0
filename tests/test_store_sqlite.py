"""SqliteStore beyond the store contract (tests/test_store_contract.py): the migration of a schema 1
data directory, acked rows kept for their send ids and swept by the prune, and the prune spread
over commits in bounded steps."""

from __future__ import annotations

import sqlite3

import pytest

import zmq_chat.broker.store
from zmq_chat.broker.storage import SendRecord, WriteBatch
from zmq_chat.broker.store import SCHEMA_VERSION, SqliteStore
from zmq_chat.protocol import messages as m

pytestmark = pytest.mark.timeout(30)

T0 = 1_800_000_000.0
REPLY = b'{"status":"ok","digest":7,"ids":{"bob":1},"ts":1.0,"busy":[]}'

SCHEMA_V1 = """
CREATE TABLE users (name TEXT PRIMARY KEY, hash TEXT NOT NULL, created REAL NOT NULL, last_seen REAL,
    last_seen_hidden INTEGER NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE mailbox (id INTEGER PRIMARY KEY AUTOINCREMENT, recipient TEXT NOT NULL, sender TEXT NOT NULL,
    ts REAL NOT NULL, text TEXT NOT NULL, cid TEXT NOT NULL);
CREATE INDEX mailbox_by_recipient ON mailbox (recipient, id);
CREATE TABLE sends (sender TEXT NOT NULL, cid TEXT NOT NULL, ts REAL NOT NULL, reply BLOB NOT NULL,
    PRIMARY KEY (sender, cid)) WITHOUT ROWID;
CREATE TABLE events (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('seq', 0);
"""
"""Schema version 1 as the broker before issue 9 created it."""


def _write_v1(path) -> None:
    """A version 1 database: alice and bob, mail 1..3 for bob (2 was acked, so deleted), two send
    ids, events 1..2."""
    path.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path / "chat.sqlite3", isolation_level=None)
    db.executescript("BEGIN;" + SCHEMA_V1 + "PRAGMA user_version=1; COMMIT;")
    db.executemany("INSERT INTO users (name, hash, created) VALUES (?, ?, ?)", [("alice", "$a", T0), ("bob", "$b", T0)])
    db.executemany("INSERT INTO mailbox VALUES (?, 'bob', 'alice', ?, ?, ?)",
                   [(i, T0 + i, f"text {i}", f"s{i}") for i in (1, 2, 3)])
    db.execute("DELETE FROM mailbox WHERE id = 2")
    db.executemany("INSERT INTO sends VALUES ('alice', ?, ?, ?)", [("s1", T0 + 1, REPLY), ("s3", T0 + 3, REPLY)])
    db.executemany("INSERT INTO events VALUES (?, ?)", [(1, b"{}"), (2, b"{}")])
    db.execute("UPDATE meta SET value = 2 WHERE key = 'seq'")
    db.close()


def _rows(store: SqliteStore, sql: str = "SELECT id, acked, text FROM mailbox ORDER BY id") -> list[tuple]:
    return store.db.execute(sql).fetchall()


def _mail(mid: int, ts: float, to: str = "bob") -> m.PrivateMessage:
    return m.PrivateMessage(mid, "alice", to, ts, f"text {mid}", f"s{mid}")


def _sent(mid: int, ts: float) -> SendRecord:
    return SendRecord("alice", f"s{mid}", ts, REPLY, mid)


def test_a_version_2_directory_gets_the_group_column_and_keeps_its_rows(tmp_path):
    store = SqliteStore(tmp_path)
    batch = WriteBatch()
    batch.mail.append(_mail(1, T0))
    store.commit(batch)
    store.db.execute("ALTER TABLE mailbox DROP COLUMN grp")  # as schema 2 left it
    store.db.execute("PRAGMA user_version=2")
    store.close()
    store = SqliteStore(tmp_path)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == 3
        assert store.mail_after("bob", 0, 10) == [_mail(1, T0)]
        batch = WriteBatch()
        batch.mail.append(m.PrivateMessage(2, "alice", "bob", T0, "team", "g", ["bob", "carol"]))
        store.commit(batch)
        assert [x.group for x in store.mail_after("bob", 0, 10)] == [[], ["bob", "carol"]]
    finally:
        store.close()


def test_a_version_1_directory_is_migrated_and_keeps_its_state(tmp_path):
    _write_v1(tmp_path)
    store = SqliteStore(tmp_path)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        snap = store.load(0.0)
        assert set(snap.users) == {"alice", "bob"} and snap.seq == 2 and snap.last_mail_id == 3
        assert snap.mail_counts == {"bob": 2}
        assert [(x.cid, x.ts, x.reply) for x in snap.sends] == [("s1", T0 + 1, REPLY), ("s3", T0 + 3, REPLY)]
        assert [x.id for x in store.mail_after("bob", 0, 10)] == [1, 3]
        batch = WriteBatch()
        batch.mail.append(_mail(4, T0 + 4))
        batch.sends.append(_sent(4, T0 + 4))
        batch.acks.append(("bob", [1, 4]))  # 1 was stored by version 1: gone at once; 4 is kept, marked
        store.commit(batch)
        assert _rows(store) == [(3, 0, "text 3"), (4, 1, "")]
        assert [x.cid for x in store.load(0.0).sends] == ["s1", "s3", "s4"]
    finally:
        store.close()
    again = SqliteStore(tmp_path)  # a second open finds version 2 and changes nothing
    try:
        assert _rows(again) == [(3, 0, "text 3"), (4, 1, "")] and again.load(0.0).mail_counts == {"bob": 1}
    finally:
        again.close()


def test_acked_rows_are_swept_once_older_than_the_window_and_later_acks_below_the_sweep_delete(tmp_path):
    store = SqliteStore(tmp_path)
    try:
        batch = WriteBatch()
        batch.mail += [_mail(i, T0 + i) for i in range(1, 7)]
        batch.sends += [_sent(i, T0 + i) for i in range(1, 7)]
        batch.acks.append(("bob", [1, 2, 5]))
        store.commit(batch)
        assert _rows(store, "SELECT id FROM mailbox WHERE acked = 1") == [(1,), (2,), (5,)]
        prune = WriteBatch()
        prune.prune = (1000, T0 + 4)  # send ids of 1..3 are out of the window
        store.commit(prune)
        assert [r[0] for r in _rows(store)] == [3, 4, 5, 6]  # 1, 2 swept; 3 waits; 5 inside the window
        assert [x.cid for x in store.load(T0 + 4).sends] == ["s4", "s5", "s6"]
        acks = WriteBatch()
        acks.acks.append(("bob", [3, 4]))  # 3 is below the sweep: deleted; 4 is marked
        store.commit(acks)
        assert _rows(store) == [(4, 1, ""), (5, 1, ""), (6, 0, "text 6")]
        assert store.load(0.0).mail_counts == {"bob": 1}
    finally:
        store.close()


def test_a_prune_is_spread_over_commits_in_bounded_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(zmq_chat.broker.store, "PRUNE_ROWS", 3)
    store = SqliteStore(tmp_path)
    try:
        batch = WriteBatch()
        batch.mail += [_mail(i, T0 + i) for i in range(1, 11)]
        batch.sends += [_sent(i, T0 + i) for i in range(1, 11)]
        batch.sends += [SendRecord("carol", f"b{i}", T0 + i, b"{}") for i in range(1, 11)]  # broadcasts
        for seq in range(1, 11):
            batch.add_event(m.Event(seq, T0 + seq, "bcast", "carol", text="x", cid=f"b{seq}"))
        batch.acks.append(("bob", list(range(1, 11))))
        store.commit(batch)
        prune = WriteBatch()
        prune.prune = (1, T0 + 100)  # everything goes but the newest event
        counts = []
        store.commit(prune)
        for _ in range(10):  # each later commit, even an empty one, takes a step
            counts.append(_rows(store, "SELECT (SELECT count(*) FROM mailbox), (SELECT count(*) FROM sends),"
                                       " (SELECT count(*) FROM events)")[0])
            store.commit(WriteBatch())
        assert counts[0] == (7, 7, 7)  # 3 of each per commit
        assert counts[-1] == (0, 0, 1) and counts.index((0, 0, 1)) == 3
        assert store.load(0.0).sends == [] and store.event_bodies_after(0, 10)[0][0] == 10
    finally:
        store.close()


def test_a_failed_commit_keeps_the_sweep_where_it_was(tmp_path):
    store = SqliteStore(tmp_path)
    try:
        batch = WriteBatch()
        batch.mail += [_mail(1, T0), _mail(2, T0)]
        batch.acks.append(("bob", [1]))
        store.commit(batch)
        bad = WriteBatch()
        bad.mail.append(_mail(2, T0))  # the id exists: the commit fails and rolls back
        bad.prune = (10, T0 + 1)
        with pytest.raises(sqlite3.IntegrityError):
            store.commit(bad)
        assert store.db.execute("SELECT value FROM meta WHERE key = 'swept'").fetchone()[0] == 1
        assert _rows(store) == [(1, 1, ""), (2, 0, "text 2")]
        store.commit(WriteBatch())  # the prune goes on with the next commit
        assert _rows(store) == [(2, 0, "text 2")]
    finally:
        store.close()


def test_the_epoch_is_made_with_the_database_kept_by_reopening_and_added_to_an_older_one(tmp_path):
    first = SqliteStore(tmp_path / "a")
    epoch = first.load(0.0).epoch
    first.close()
    again = SqliteStore(tmp_path / "a")
    try:
        assert again.load(0.0).epoch == epoch and len(epoch) == 32 and int(epoch, 16) >= 0
        again.db.execute("DELETE FROM meta WHERE key = 'epoch'")  # as a database made before epochs
    finally:
        again.close()
    other = SqliteStore(tmp_path / "b")  # a new data directory: a new log, a new epoch
    try:
        assert other.load(0.0).epoch not in ("", epoch)
    finally:
        other.close()
    added = SqliteStore(tmp_path / "a")
    try:
        new = added.load(0.0).epoch
        assert new not in ("", epoch)
    finally:
        added.close()
    kept = SqliteStore(tmp_path / "a")
    try:
        assert kept.load(0.0).epoch == new
    finally:
        kept.close()
    _write_v1(tmp_path / "v1")  # a schema 1 directory gets one at its migration
    migrated = SqliteStore(tmp_path / "v1")
    try:
        assert len(migrated.load(0.0).epoch) == 32
    finally:
        migrated.close()


def test_an_epoch_is_never_stored_as_a_number(monkeypatch):
    import uuid

    draws = iter([uuid.UUID("12345678901234567890123456789012"), uuid.UUID("1234567890e234567890123456789012"),
                  uuid.UUID("1234567890e2345678a0123456789012")])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    assert zmq_chat.broker.store._new_epoch() == "1234567890e2345678a0123456789012"
