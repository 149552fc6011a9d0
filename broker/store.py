"""The embedded store (broker.storage.Store on SQLite): users and their argon2id hashes, mailboxes,
the event log, send ids, in `<data_dir>/chat.sqlite3`.

Two connections: one that commits (on the broker's writer thread, broker.writer) and one that
reads (on the loop thread). WAL mode with synchronous=FULL (NORMAL with
--sync normal). Each loop wake-up's writes arrive as one WriteBatch and are committed in one
transaction before any reply that acknowledges them, so an acknowledged message survives `kill -9`
(and, under FULL, power loss). Schema versioned with `PRAGMA user_version` (SCHEMA_VERSION).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

from zmq_chat.broker.sendids import MAX_IDS
from zmq_chat.broker.storage import SendRecord, Snapshot, StoreError, UserRecord, WriteBatch
from zmq_chat.protocol import messages as m

SCHEMA_VERSION = 1

_SCHEMA_V1 = """
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
    text TEXT NOT NULL,
    cid TEXT NOT NULL
);
CREATE INDEX mailbox_by_recipient ON mailbox (recipient, id);
CREATE TABLE sends (                  -- send ids already stored, for retried sends
    sender TEXT NOT NULL,
    cid TEXT NOT NULL,
    ts REAL NOT NULL,
    reply BLOB NOT NULL,              -- JSON of the fields of the first reply
    PRIMARY KEY (sender, cid)
) WITHOUT ROWID;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL                -- JSON of protocol.messages.Event
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('seq', 0);
"""


class SqliteStore:
    """The broker's persistent state in `<data_dir>/chat.sqlite3` (implements broker.storage.Store).

    synchronous: "FULL" (fsync at every commit) or "NORMAL" (survives a crash of the broker, not
    of the machine). The store holds an exclusive lock on `<data_dir>/chat.lock` until close():
    the core keeps accounts and counters in memory, so a second writer (another broker on the
    same directory) would be lost or collide. Raises StoreError when the database cannot be
    opened, was written by a newer schema, or is locked by another process; ValueError for
    another synchronous value.
    """

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
            self.db.execute("PRAGMA cache_size=-65536")  # KiB: 64 MiB keeps the send-id index hot
            self._migrate()
            # Reads get their own connection: the writer thread (broker.writer) commits on `db`
            # while the loop reads here; WAL lets a reader see the last commit without waiting.
            self.reader = sqlite3.connect(path / "chat.sqlite3", isolation_level=None, check_same_thread=False)
            self.reader.execute("PRAGMA query_only=1")
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
        if version == 0:
            self.db.executescript("BEGIN;" + _SCHEMA_V1 + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")

    def load(self, sends_since: float) -> Snapshot:
        """Accounts, counters, mailbox sizes and the send ids stored at or after `sends_since`."""
        db = self.db
        users = {r[0]: UserRecord(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in db.execute(
            "SELECT name, hash, created, last_seen, last_seen_hidden, last_seq FROM users")}
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'").fetchone()
        counts = dict(db.execute("SELECT recipient, count(*) FROM mailbox GROUP BY recipient").fetchall())
        newest = db.execute("SELECT sender, cid, ts, reply FROM sends WHERE ts >= ? ORDER BY ts DESC LIMIT ?",
                            (sends_since, MAX_IDS)).fetchall()  # broker.sendids keeps no more
        sends = [SendRecord(*r) for r in reversed(newest)]
        seq = db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]
        return Snapshot(users, seq, row[0] if row else 0, counts, sends)

    def commit(self, batch: WriteBatch) -> None:
        """Apply `batch` in one transaction (one fsync under synchronous=FULL)."""
        if not batch:
            return
        db = self.db
        db.execute("BEGIN")
        try:
            if batch.users:
                db.executemany("INSERT OR IGNORE INTO users (name, hash, created, last_seq) VALUES (?, ?, ?, ?)",
                               [(u.name, u.hash, u.created, u.last_seq) for u in batch.users])
            if batch.sends:
                db.executemany("INSERT OR REPLACE INTO sends VALUES (?, ?, ?, ?)",
                               [(x.sender, x.cid, x.ts, x.reply) for x in batch.sends])
            if batch.mail:
                db.executemany("INSERT INTO mailbox VALUES (?, ?, ?, ?, ?, ?)",
                               [(x.id, x.to, x.sender, x.ts, x.text, x.cid) for x in batch.mail])
            if batch.events:
                db.executemany("INSERT INTO events VALUES (?, ?)", batch.events)
                db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (batch.events[-1][0],))
            if batch.acks:
                db.executemany("DELETE FROM mailbox WHERE id = ? AND recipient = ?",
                               [(i, name) for name, ids in batch.acks for i in ids])
            if batch.last_seen:
                db.executemany("UPDATE users SET last_seen = ?, last_seen_hidden = ?, last_seq = ? WHERE name = ?",
                               [(when, int(hidden), seq, name) for name, when, hidden, seq in batch.last_seen])
            if batch.prune is not None:
                keep, sends_before = batch.prune
                db.execute("DELETE FROM events WHERE seq <= (SELECT value FROM meta WHERE key = 'seq') - ?", (keep,))
                db.execute("DELETE FROM sends WHERE ts < ?", (sends_before,))
        except BaseException:
            if db.in_transaction:  # (SQLite rolls back by itself after some errors, e.g. a full disk)
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (every batch was committed by commit()) and release the lock."""
        self.reader.close()
        self.db.close()
        os.close(self._lock)

    # -- reads ----------------------------------------------------------------------------------
    def mail_after(self, recipient: str, after_id: int, limit: int) -> list[m.PrivateMessage]:
        """Up to `limit` messages of `recipient`'s mailbox with id > after_id, oldest first."""
        rows = self.reader.execute(
            "SELECT id, sender, ts, text, cid FROM mailbox WHERE recipient = ? AND id > ? ORDER BY id LIMIT ?",
            (recipient, after_id, limit),
        ).fetchall()
        return [m.PrivateMessage(r[0], r[1], recipient, r[2], r[3], r[4]) for r in rows]

    def mail_by_ids(self, recipient: str, ids: list[int]) -> list[m.PrivateMessage]:
        """The messages of `recipient`'s mailbox among `ids` (at most 1000), oldest first."""
        rows = []
        for start in range(0, len(ids), 500):  # SQLite before 3.32 takes at most 999 parameters
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows += self.reader.execute(
                f"SELECT id, sender, ts, text, cid FROM mailbox WHERE recipient = ? AND id IN ({marks})",
                (recipient, *chunk),
            ).fetchall()
        return [m.PrivateMessage(r[0], r[1], recipient, r[2], r[3], r[4]) for r in sorted(rows)]

    def event_bodies_after(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` logged events with seq > after, oldest first, as (seq, JSON body bytes)."""
        return self.reader.execute(
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()


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
