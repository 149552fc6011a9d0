"""Embedded SQLite store: users and their argon2id hashes, mailboxes, the event log, send ids.

One connection, used only by the broker's loop thread. WAL mode with synchronous=FULL (NORMAL with --sync normal); writes are
grouped into one transaction per loop wake-up and `commit()` is called before any reply that
acknowledges them, so an acknowledged message survives `kill -9` (and, under FULL, power loss). Schema versioned with
`PRAGMA user_version` (SCHEMA_VERSION).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, NamedTuple

from zmq_chat.protocol import messages as m
from zmq_chat.protocol.wire import decode_stored_event, encode_json

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


class UserRow(NamedTuple):
    """One account: name, argon2id hash string, last_seen (seconds or None), hidden then, last_seq."""

    name: str
    hash: str
    last_seen: float | None
    last_seen_hidden: bool
    last_seq: int


class StoreError(Exception):
    """The data directory or database cannot be opened or has a newer schema than this program."""


class Store:
    """The broker's persistent state in `<data_dir>/chat.sqlite3`.

    Raises StoreError when the database cannot be opened or was written by a newer schema.
    """

    def __init__(self, data_dir: str | Path, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        path = Path(data_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path / "chat.sqlite3", isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute("PRAGMA cache_size=-65536")  # KiB: 64 MiB keeps the send-id index hot
            self.db.execute("PRAGMA temp_store=MEMORY")  # a request's SAVEPOINT journal stays in memory
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store in {path}: {exc}") from exc
        self.path = path
        self._in_tx = False
        self._mail_buffer: list[tuple[int, str, str, float, str, str]] = []
        self._req_open = False  # between begin_request() and end_request()
        self._req_savepoint = False  # the request's SAVEPOINT is open
        self._req_mark = 0  # mail buffer entries before this index belong to earlier requests
        self._reinsert: list[tuple[int, str, str, float, str, str]] = []  # (see _flush_mail)

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"schema version {version} is newer than this broker's {SCHEMA_VERSION}")
        if version == 0:
            self.db.executescript("BEGIN;" + _SCHEMA_V1 + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")

    # -- transactions ---------------------------------------------------------------------------
    def _begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True
        if self._req_open and not self._req_savepoint:
            self.db.execute("SAVEPOINT request")
            self._req_savepoint = True

    def _flush_mail(self) -> None:
        """Write buffered mailbox inserts (one executemany) before anything reads the mailbox.
        Inside a request, the entries of earlier requests written under its SAVEPOINT are
        remembered, and written again if the request is rolled back (end_request)."""
        if not self._mail_buffer:
            return
        self._begin()
        self.db.executemany("INSERT INTO mailbox VALUES (?, ?, ?, ?, ?, ?)", self._mail_buffer)
        if self._req_savepoint and self._req_mark:
            self._reinsert.extend(self._mail_buffer[:self._req_mark])
        self._mail_buffer = []
        self._req_mark = 0

    def begin_request(self) -> None:
        """Start one request's writes: its first write opens a SAVEPOINT (end_request closes it)."""
        self._req_open = True
        self._req_savepoint = False
        self._req_mark = len(self._mail_buffer)

    def end_request(self, ok: bool) -> None:
        """End the request's writes: keep them (ok) or undo them all, buffered mail included,
        while the writes of earlier requests in the same transaction stay (docs: E_INTERNAL)."""
        if self._req_savepoint:
            if not ok:
                self.db.execute("ROLLBACK TO request")
            self.db.execute("RELEASE request")
            if not ok and self._reinsert:  # earlier requests' mail that the rollback took along
                self.db.executemany("INSERT INTO mailbox VALUES (?, ?, ?, ?, ?, ?)", self._reinsert)
        if not ok:
            del self._mail_buffer[self._req_mark:]
        self._reinsert = []
        self._req_open = False
        self._req_savepoint = False

    def commit(self) -> None:
        """Commit the open transaction, if any (fsync under synchronous=FULL)."""
        self._flush_mail()
        if self._in_tx:
            self.db.execute("COMMIT")
            self._in_tx = False

    def close(self) -> None:
        """Commit and close the connection (buffered writes included)."""
        self.commit()
        self.db.close()

    # -- users ------------------------------------------------------------------------------------
    def get_user(self, name: str) -> UserRow | None:
        """The account `name` (case-sensitive), or None."""
        row = self.db.execute(
            "SELECT name, hash, last_seen, last_seen_hidden, last_seq FROM users WHERE name = ?", (name,)
        ).fetchone()
        return UserRow(row[0], row[1], row[2], bool(row[3]), row[4]) if row else None

    def add_user(self, name: str, pwhash: str, now: float, last_seq: int) -> bool:
        """Insert an account; False when the name is taken."""
        self._begin()
        cur = self.db.execute(
            "INSERT OR IGNORE INTO users (name, hash, created, last_seq) VALUES (?, ?, ?, ?)",
            (name, pwhash, now, last_seq),
        )
        return cur.rowcount == 1

    def set_last_seen(self, name: str, when: float, hidden: bool, last_seq: int) -> None:
        """Record the end of `name`'s session: time (seconds), hidden then, last sequence number seen."""
        self._begin()
        self.db.execute(
            "UPDATE users SET last_seen = ?, last_seen_hidden = ?, last_seq = ? WHERE name = ?",
            (when, int(hidden), last_seq, name),
        )

    def seen_since(self, when: float) -> list[str]:
        """Names whose last session ended at or after `when` (seconds) while visible."""
        rows = self.db.execute(
            "SELECT name FROM users WHERE last_seen >= ? AND last_seen_hidden = 0", (when,)
        ).fetchall()
        return [r[0] for r in rows]

    def count_users(self) -> int:
        """Number of accounts."""
        return self.db.execute("SELECT count(*) FROM users").fetchone()[0]

    # -- mailboxes --------------------------------------------------------------------------------
    def last_mail_id(self) -> int:
        """The highest mailbox id ever handed out (AUTOINCREMENT never reuses ids), 0 when none."""
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'").fetchone()
        return row[0] if row else 0

    def add_mail(self, mail_id: int, recipient: str, sender: str, ts: float, text: str, cid: str) -> None:
        """Store one private message under `mail_id` (chosen by the caller, above last_mail_id()).

        Buffered: written with the next read of the mailbox or at commit().
        """
        self._mail_buffer.append((mail_id, recipient, sender, ts, text, cid))

    def mail_after(self, recipient: str, after_id: int, limit: int) -> list[m.PrivateMessage]:
        """Up to `limit` messages of `recipient`'s mailbox with id > after_id, oldest first."""
        self._flush_mail()
        rows = self.db.execute(
            "SELECT id, sender, ts, text, cid FROM mailbox WHERE recipient = ? AND id > ? ORDER BY id LIMIT ?",
            (recipient, after_id, limit),
        ).fetchall()
        return [m.PrivateMessage(r[0], r[1], recipient, r[2], r[3], r[4]) for r in rows]

    def mail_by_ids(self, recipient: str, ids: list[int]) -> list[m.PrivateMessage]:
        """The messages of `recipient`'s mailbox among `ids` (at most 1000), oldest first."""
        self._flush_mail()
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT id, sender, ts, text, cid FROM mailbox WHERE recipient = ? AND id IN ({marks}) ORDER BY id",
            (recipient, *ids),
        ).fetchall()
        return [m.PrivateMessage(r[0], r[1], recipient, r[2], r[3], r[4]) for r in rows]

    def delete_mail(self, recipient: str, ids: Iterable[int]) -> int:
        """Remove acknowledged messages (only `recipient`'s own); returns how many were removed."""
        self._flush_mail()
        self._begin()
        cur = self.db.executemany(
            "DELETE FROM mailbox WHERE id = ? AND recipient = ?", [(i, recipient) for i in ids]
        )
        return cur.rowcount

    def count_mail_after(self, recipient: str, after_id: int) -> int:
        """Messages in `recipient`'s mailbox with id > after_id (not yet sent in this session)."""
        self._flush_mail()
        return self.db.execute(
            "SELECT count(*) FROM mailbox WHERE recipient = ? AND id > ?", (recipient, after_id)
        ).fetchone()[0]

    def user_names(self) -> set[str]:
        """All account names."""
        return {r[0] for r in self.db.execute("SELECT name FROM users")}

    def mail_counts(self) -> dict[str, int]:
        """Messages waiting per recipient (recipients with none left out)."""
        self._flush_mail()
        return dict(self.db.execute("SELECT recipient, count(*) FROM mailbox GROUP BY recipient").fetchall())

    def count_mail(self) -> int:
        """Messages waiting in all mailboxes."""
        self._flush_mail()
        return self.db.execute("SELECT count(*) FROM mailbox").fetchone()[0]

    # -- send ids ---------------------------------------------------------------------------------
    def get_send(self, sender: str, cid: str) -> bytes | None:
        """The stored reply fields (JSON bytes) of an earlier send with this id, or None."""
        row = self.db.execute("SELECT reply FROM sends WHERE sender = ? AND cid = ?", (sender, cid)).fetchone()
        return row[0] if row else None

    def claim_send(self, sender: str, cid: str, ts: float, reply: bytes) -> bool:
        """Remember a new send id with its reply fields (JSON bytes), in one statement.

        Returns False (and stores nothing) when the sender already used this id: a retry.
        """
        self._begin()
        cur = self.db.execute("INSERT OR IGNORE INTO sends VALUES (?, ?, ?, ?)", (sender, cid, ts, reply))
        return cur.rowcount == 1

    # -- event log --------------------------------------------------------------------------------
    def last_seq(self) -> int:
        """The newest sequence number handed out (0 when none)."""
        return self.db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]

    def add_event(self, event: m.Event) -> None:
        """Append an event to the log and advance the stored sequence counter to event.seq."""
        self._begin()
        self.db.execute("INSERT INTO events VALUES (?, ?)", (event.seq, encode_json(event)))
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (event.seq,))

    def event_bodies_after(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` logged events with seq > after, oldest first, as (seq, JSON body bytes)."""
        return self.db.execute(
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()

    def events_after(self, after: int, limit: int) -> list[m.Event]:
        """Up to `limit` logged events with seq > after, oldest first."""
        rows = self.db.execute(
            "SELECT body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()
        return [decode_stored_event(r[0]) for r in rows]

    def prune(self, keep_events: int, sends_before: float) -> None:
        """Keep the newest `keep_events` events; forget send ids stored before `sends_before` (seconds)."""
        self._begin()
        self.db.execute("DELETE FROM events WHERE seq <= (SELECT value FROM meta WHERE key = 'seq') - ?", (keep_events,))
        self.db.execute("DELETE FROM sends WHERE ts < ?", (sends_before,))
