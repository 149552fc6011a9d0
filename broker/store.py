"""The embedded store (broker.storage.Store on SQLite): users and their argon2id hashes, mailboxes,
the event log, send ids, in `<data_dir>/chat.sqlite3`.

Two connections: one that commits (on the broker's writer thread, broker.writer) and one that
reads (on the loop thread). WAL mode with synchronous=FULL (NORMAL with
--sync normal). Each loop wake-up's writes arrive as one WriteBatch and are committed in one
transaction before any reply that acknowledges them, so an acknowledged message survives `kill -9`
(and, under FULL, power loss). Schema versioned with `PRAGMA user_version` (SCHEMA_VERSION; a
version 1 database is migrated when opened).

What a private message costs (schema 2): one row insert. Its send id (sender, cid, ts) is in the
mailbox row already, and the send's first reply goes into the first recipient's row (`reply`),
so no `sends` row is written. An ack therefore marks its rows (`acked` = 1, text emptied) instead
of deleting them: a retried send id stays recognised for --sends-keep-seconds, also after a
restart, whether or not its message was acked. The index on waiting mail is partial (acked = 0),
so marked rows cost the mailbox reads nothing. Mail ids grow with time, so the prune deletes marked
rows by id range from `swept` (kept in `meta`: no row below it is marked) up to the first row still
inside the send-id window; an ack of a row below `swept` deletes it at once. Broadcasts keep a
`sends` row (the event log is trimmed by count, not by time), keyed by time so that the prune
deletes a range of it. Every prune step is bounded (PRUNE_ROWS per table and commit, plus twice
the batch's new mail): what is left is done by the following commits, so no commit waits behind
a long prune.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import uuid
from pathlib import Path

import msgspec

from zmq_chat.broker.checkpoint import Checkpointer
from zmq_chat.broker.sendids import MAX_IDS
from zmq_chat.broker.storage import SendRecord, Snapshot, StoreError, UserRecord, WriteBatch
from zmq_chat.protocol import messages as m

AUTOCHECKPOINT_PAGES = 4096
"""WAL pages (4 KiB each) past which a commit checkpoints by itself: a backstop behind
broker.checkpoint, which copies the pages in the background and keeps this checkpoint short."""
SCHEMA_VERSION = 3

PRUNE_ROWS = 4000
"""Rows (for the mailbox: mail ids) one commit's prune step goes through per table at most, plus
twice the number of messages the batch adds (so the sweep keeps pace with the inserts). A step
over 4000 acked mailbox rows took about 1.5 ms on the 2-core test machine."""

_TABLES_V2 = """
CREATE TABLE users (
    name TEXT PRIMARY KEY,            -- case-sensitive username
    hash TEXT NOT NULL,               -- nacl.pwhash.argon2id.str() output, never the password
    created REAL NOT NULL,            -- seconds since the epoch
    last_seen REAL,                   -- end of the last session, seconds since the epoch
    last_seen_hidden INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0  -- event sequence number the user had seen at that end
);
CREATE TABLE mailbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    ts REAL NOT NULL,
    text TEXT NOT NULL,               -- '' once acked
    cid TEXT NOT NULL,                -- the send id
    reply BLOB,                       -- JSON of the send's first reply, on its first row only
    acked INTEGER NOT NULL DEFAULT 0  -- 1: acked, kept for its send id until pruned
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL                -- JSON of protocol.messages.Event
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('seq', 0);
"""

_V2_PARTS = """
CREATE INDEX mailbox_waiting ON mailbox (recipient, id) WHERE acked = 0;
CREATE TABLE sends (                  -- broadcast send ids (and those stored by schema 1)
    ts REAL NOT NULL,
    sender TEXT NOT NULL,
    cid TEXT NOT NULL,
    reply BLOB NOT NULL,              -- JSON of the fields of the first reply
    PRIMARY KEY (ts, sender, cid)
) WITHOUT ROWID;
"""

_MIGRATE_V1 = """
ALTER TABLE mailbox ADD COLUMN reply BLOB;
ALTER TABLE mailbox ADD COLUMN acked INTEGER NOT NULL DEFAULT 0;
DROP INDEX mailbox_by_recipient;
ALTER TABLE sends RENAME TO sends_v1;
""" + _V2_PARTS + """
INSERT INTO sends SELECT ts, sender, cid, reply FROM sends_v1;
DROP TABLE sends_v1;
"""

_V3 = """
ALTER TABLE mailbox ADD COLUMN grp TEXT;  -- a group message's recipients, comma-separated (NULL: one)
"""

_MARK = ("UPDATE mailbox SET acked = 1, text = '', grp = NULL"
         " WHERE id IN (SELECT value FROM json_each(?)) AND recipient = ? AND acked = 0")
_DELETE = "DELETE FROM mailbox WHERE id IN (SELECT value FROM json_each(?)) AND recipient = ? AND acked = 0"
_ids_json = msgspec.json.Encoder().encode


class SqliteStore:
    """The broker's persistent state in `<data_dir>/chat.sqlite3` (implements broker.storage.Store).

    synchronous: "FULL" (fsync at every commit) or "NORMAL" (survives a crash of the broker, not
    of the machine). The store holds an exclusive lock on `<data_dir>/chat.lock` until close():
    the core keeps accounts and counters in memory, so a second writer (another broker on the
    same directory) would be lost or collide. Raises StoreError when the database cannot be
    opened, was written by a newer schema, or is locked by another process; ValueError for
    another synchronous value.
    """

    shared = False  # one broker: the core numbers and publishes events itself

    def __init__(self, data_dir: str | Path, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        path = Path(data_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._lock = _lock_dir(path)
        except OSError as exc:
            raise StoreError(f"cannot open the store in {path}: {exc}") from exc
        try:
            self.db = sqlite3.connect(path / "chat.sqlite3", isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute("PRAGMA cache_size=-65536")  # KiB: 64 MiB keeps the indexes hot
            self.db.execute("SELECT value FROM json_each('[1]')")  # acks need JSON1: fail at open, not at an ack
            self._migrate()
            self.epoch = self._epoch()
            # Reads get their own connection: the writer thread (broker.writer) commits on `db`
            # while the loop reads here; WAL lets a reader see the last commit without waiting.
            self.reader = sqlite3.connect(path / "chat.sqlite3", isolation_level=None, check_same_thread=False)
            self.reader.execute("PRAGMA query_only=1")
            self.db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            self.checkpointer = Checkpointer(path / "chat.sqlite3")  # checkpoints off the commit path
            # commit()'s state (the writer thread's): where the sweep of acked rows stands, and
            # the prune still to finish ((events to keep, forget send ids before), or None)
            self._swept: int = self.db.execute("SELECT value FROM meta WHERE key = 'swept'").fetchone()[0]
            self._pruning: tuple[int, float] | None = None
        except (OSError, sqlite3.Error, StoreError) as exc:
            os.close(self._lock)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open the store in {path}: {exc}") from exc
        self.path = path

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"schema version {version} is newer than this broker's {SCHEMA_VERSION}")
        if version == SCHEMA_VERSION:
            return
        if version == 2:  # (its `swept` is there already)
            self.db.executescript("BEGIN;" + _V3 + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            return
        script = (_TABLES_V2 + _V2_PARTS if version == 0 else _MIGRATE_V1) + _V3
        # rows below `swept` are never marked acked: in schema 1 every stored row is still waiting
        swept = "INSERT INTO meta VALUES ('swept', coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'), 0) + 1);"
        if version == 0:
            swept = "INSERT INTO meta VALUES ('swept', 1);"
        try:
            self.db.executescript("BEGIN;" + script + swept + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        except BaseException:
            if self.db.in_transaction:  # nothing of a failed migration stays
                self.db.execute("ROLLBACK")
            raise

    def load(self, sends_since: float) -> Snapshot:
        """Accounts, counters, mailbox sizes and the send ids stored at or after `sends_since`."""
        db = self.db
        users = {r[0]: UserRecord(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in db.execute(
            "SELECT name, hash, created, last_seen, last_seen_hidden, last_seq FROM users")}
        counts = dict(db.execute("SELECT recipient, count(*) FROM mailbox WHERE acked = 0 GROUP BY recipient").fetchall())
        seq = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]
        return Snapshot(users, seq, _last_mail_id(db), counts, self._recent_sends(sends_since), self.epoch)

    def _epoch(self) -> str:
        """The log's epoch (Snapshot.epoch) from `meta`, made when missing: at the database's
        creation, or at the first open of a database made before epochs."""
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (_new_epoch(),))
        return str(self.db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])

    def _recent_sends(self, since: float) -> list[SendRecord]:
        """The newest MAX_IDS send ids (broker.sendids keeps no more) stored at or after `since`,
        oldest first: private ones from the mailbox rows at or above `swept` (those below are
        older than any window), broadcasts from `sends`. An id used again after the core forgot
        it appears twice: the newest wins."""
        db = self.db
        private = db.execute("SELECT sender, cid, ts, reply, id FROM mailbox WHERE id >= ? AND reply IS NOT NULL"
                             " AND ts >= ? ORDER BY id DESC LIMIT ?", (self._swept, since, MAX_IDS)).fetchall()
        public = db.execute("SELECT sender, cid, ts, reply FROM sends WHERE ts >= ? ORDER BY ts DESC LIMIT ?",
                            (since, MAX_IDS)).fetchall()
        records = sorted([SendRecord(*r) for r in private] + [SendRecord(*r) for r in public], key=lambda x: x.ts)
        newest: dict[tuple[str, str], SendRecord] = {}
        for record in records:
            newest.pop((record.sender, record.cid), None)
            newest[(record.sender, record.cid)] = record
        return list(newest.values())[-MAX_IDS:]

    def commit(self, batch: WriteBatch) -> None:
        """Apply `batch` in one transaction (one fsync under synchronous=FULL), with a bounded step
        of the pending prune."""
        if batch.prune is not None:
            self._pruning = batch.prune
        if not batch and self._pruning is None:
            return
        db = self.db
        db.execute("BEGIN")
        try:
            self._write(batch)
            swept, done = self._prune_step(PRUNE_ROWS + 2 * len(batch.mail)) if self._pruning else (self._swept, True)
        except BaseException:
            if db.in_transaction:  # (SQLite rolls back by itself after some errors, e.g. a full disk)
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._swept = swept
        if done:
            self._pruning = None

    def _write(self, batch: WriteBatch) -> None:
        """The rows of `batch`, in WriteBatch's order, inside commit()'s transaction."""
        db = self.db
        if batch.users:
            db.executemany("INSERT OR IGNORE INTO users (name, hash, created, last_seq) VALUES (?, ?, ?, ?)",
                           [(u.name, u.hash, u.created, u.last_seq) for u in batch.users])
        first_rows = {x.mail_id: x for x in batch.sends if x.mail_id}
        if batch.mail:
            take = first_rows.pop
            db.executemany("INSERT INTO mailbox VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                           [(x.id, x.to, x.sender, x.ts, x.text, x.cid, r.reply if (r := take(x.id, None)) else None,
                             ",".join(x.group) if x.group else None) for x in batch.mail])
        alone = [x for x in batch.sends if not x.mail_id] + list(first_rows.values())  # broadcasts, strays
        if alone:
            db.executemany("INSERT OR REPLACE INTO sends VALUES (?, ?, ?, ?)",
                           [(x.ts, x.sender, x.cid, x.reply) for x in alone])
        if batch.events:
            db.executemany("INSERT INTO events VALUES (?, ?)", batch.events)
            db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (batch.events[-1][0],))
        if batch.acks:
            self._ack(batch.acks)
        if batch.last_seen:
            db.executemany("UPDATE users SET last_seen = ?, last_seen_hidden = ?, last_seq = ? WHERE name = ?",
                           [(when, int(hidden), seq, name) for name, when, hidden, seq in batch.last_seen])

    def _ack(self, acks: list[tuple[str, list[int]]]) -> None:
        """Mark acked rows (one statement per ack request, its ids passed as one JSON array); rows
        below `swept` are deleted instead (the sweep has passed them: their send ids are older
        than the window)."""
        swept = self._swept
        marks, deletes = [], []
        for name, ids in acks:
            if ids and min(ids) < swept:
                deletes.append((_ids_json([i for i in ids if i < swept]).decode(), name))
                ids = [i for i in ids if i >= swept]
            if ids:
                marks.append((_ids_json(ids).decode(), name))
        if deletes:
            self.db.executemany(_DELETE, deletes)
        if marks:
            self.db.executemany(_MARK, marks)

    def _prune_step(self, budget: int) -> tuple[int, bool]:
        """Go on with the prune (self._pruning) by at most `budget` rows per table: old events,
        broadcast send ids older than the window, acked mailbox rows from `swept` up to the first
        row inside the window. Returns (the new `swept`, whether the prune is done)."""
        assert self._pruning is not None
        keep, before = self._pruning
        db = self.db
        target = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0] - keep
        db.execute("DELETE FROM events WHERE seq <= min(?, (SELECT min(seq) FROM events) + ? - 1)", (target, budget))
        db.execute("DELETE FROM sends WHERE ts < min(?1, coalesce((SELECT ts FROM sends ORDER BY ts LIMIT 1 OFFSET ?2),"
                   " ?1))", (before, budget))
        last_id = _last_mail_id(db)  # this batch's mail included: it is inside the window
        low, high = self._swept, min(self._swept + budget, last_id + 1)
        fresh = db.execute("SELECT id FROM mailbox WHERE id >= ? AND id < ? AND ts >= ? ORDER BY id LIMIT 1",
                           (low, high, before)).fetchone()
        swept = fresh[0] if fresh else high
        if swept > low:
            db.execute("DELETE FROM mailbox WHERE id >= ? AND id < ? AND acked = 1", (low, swept))
            db.execute("UPDATE meta SET value = ? WHERE key = 'swept'", (swept,))
        done = (fresh is not None or swept > last_id) and not (
            db.execute("SELECT 1 FROM events WHERE seq <= ? LIMIT 1", (target,)).fetchone()
            or db.execute("SELECT 1 FROM sends WHERE ts < ? LIMIT 1", (before,)).fetchone())
        return swept, done

    def close(self) -> None:
        """Close the connection (every batch was committed by commit()) and release the lock."""
        self.checkpointer.close()
        self.reader.close()
        self.db.close()
        os.close(self._lock)

    # -- reads ----------------------------------------------------------------------------------
    def mail_after(self, recipient: str, after_id: int, limit: int) -> list[m.PrivateMessage]:
        """Up to `limit` messages of `recipient`'s mailbox with id > after_id, oldest first."""
        rows = self.reader.execute(
            "SELECT id, sender, ts, text, cid, grp FROM mailbox WHERE recipient = ? AND id > ? AND acked = 0"
            " ORDER BY id LIMIT ?", (recipient, after_id, limit),
        ).fetchall()
        return [_message(r, recipient) for r in rows]

    def mail_by_ids(self, recipient: str, ids: list[int]) -> list[m.PrivateMessage]:
        """The messages of `recipient`'s mailbox among `ids` (at most 1000), oldest first."""
        if not ids:
            return []
        rows = self.reader.execute(
            "SELECT id, sender, ts, text, cid, grp FROM mailbox WHERE id IN (SELECT value FROM json_each(?))"
            " AND recipient = ? AND acked = 0 ORDER BY id", (_ids_json(ids).decode(), recipient),
        ).fetchall()
        return [_message(r, recipient) for r in rows]

    def event_bodies_after(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` logged events with seq > after, oldest first, as (seq, JSON body bytes)."""
        return self.reader.execute(
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()


def _last_mail_id(db: sqlite3.Connection) -> int:
    """The highest mail id ever stored (AUTOINCREMENT's counter: deleted rows' ids stay used)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'").fetchone()
    return row[0] if row else 0


def _new_epoch() -> str:
    """A uuid4 hex with a letter other than `e` in it: meta.value has INTEGER affinity, which
    would turn a text that reads as a number (all digits, or digits around one `e`) into one."""
    while True:
        epoch = uuid.uuid4().hex
        if any(c in "abcdf" for c in epoch):
            return epoch


def _lock_dir(path: Path) -> int:
    """Take the exclusive lock of the store in directory `path` (flock on `chat.lock`, mode 0600;
    released when the file descriptor is closed, also by the kernel when the process dies).
    Returns the descriptor. Raises StoreError when another process holds it."""
    fd = os.open(path / "chat.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"the store in {path} is in use by another process (another broker?)") from None
    return fd


def _message(row: tuple, recipient: str) -> m.PrivateMessage:
    """A mailbox row (id, sender, ts, text, cid, grp) of `recipient` as the `msg` push it is."""
    return m.PrivateMessage(row[0], row[1], recipient, row[2], row[3], row[4], row[5].split(",") if row[5] else [])
