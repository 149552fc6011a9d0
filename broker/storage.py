"""The broker core's view of persistent state: one interface (`Store`), the batch of writes one loop
wake-up hands over (`WriteBatch`), and what is loaded once at start (`Snapshot`).

The core never waits on a read of the store for what it needs at once: accounts and their hashes,
the sequence counter, the highest mail id, mailbox sizes and the recent send ids are loaded at start
(`Store.load`) and kept in memory by the core. The store is read only for the bodies of stored
messages and events (pushing a mailbox, answering `history`), which a networked store can answer
from a replica or cache.

Writes are not calls on the store: the core appends them to a WriteBatch while it handles the
requests of one wake-up, and the loop hands the whole batch to `Store.commit`, once, before it
releases any reply, delivery or PUB event of that wake-up. A store may commit the batch on another
thread or over the network (one transaction, one fsync): the only rule is that `commit` returns, or
its completion is awaited, before the output leaves. SQLite (broker.store.SqliteStore) is the
embedded implementation; broker.memstore.MemoryStore serves the core's unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from zmq_chat.protocol import messages as m
from zmq_chat.protocol.limits import MAX_COUNTER
from zmq_chat.protocol.wire import encode_json


class StoreError(Exception):
    """The data directory or database cannot be opened or has a newer schema than this program."""


class UserRecord(msgspec.Struct, gc=False):
    """One account. name: case-sensitive; hash: nacl argon2id string (never the password);
    created and last_seen: seconds since the epoch (last_seen None before the first session ended);
    last_seen_hidden: hidden at that end; last_seq: the event sequence number seen at that end.
    Not tracked by the garbage collector (gc=False: atomic fields only), like SendRecord: the
    broker holds thousands of each for hours, and a full collection walked them (63 ms pauses)."""

    name: str
    hash: str
    created: float
    last_seen: float | None = None
    last_seen_hidden: bool = False
    last_seq: int = 0


class SendRecord(msgspec.Struct, gc=False):
    """A send id already used: who (sender), which id (cid, 1-64 chars), when (ts, seconds), and
    the first reply's fields (reply: JSON bytes, with `status` and `digest`), answered to a retry.

    mail_id: for a private send, the id of its first mailbox row, which a store may keep the
    record in (SqliteStore does: one row per message, no separate send-id row); that row must be
    in the mail of the same WriteBatch, with the same sender, cid and ts. 0 for a broadcast.
    """

    sender: str
    cid: str
    ts: float
    reply: bytes
    mail_id: int = 0


@dataclass
class Snapshot:
    """What the core holds in memory, read once at start (Store.load).

    users: every account by name. seq: the newest event sequence number (0 when none).
    last_mail_id: the highest mail id ever handed out (ids are never reused). mail_counts: messages
    waiting per recipient (recipients with none left out). sends: send ids stored within the
    `sends_since` given to load(), oldest first.
    """

    users: dict[str, UserRecord] = field(default_factory=dict)
    seq: int = 0
    last_mail_id: int = 0
    mail_counts: dict[str, int] = field(default_factory=dict)
    sends: list[SendRecord] = field(default_factory=list)
    epoch: str = ""
    """The log's epoch id (str): made when the store's event log was created, changed whenever the
    log is lost (a new data directory, a Redis without its data). Clients compare it (docs 9.1)."""
    mail_id_limit: int = MAX_COUNTER
    """Mail ids this broker may hand out: last_mail_id < id <= mail_id_limit. A shared store leases
    a block of ids to each broker start; a store of one broker gives all (MAX_COUNTER)."""
    online: dict[str, tuple[str, float, bool]] = field(default_factory=dict)
    """Sessions on other brokers of a shared store: user -> (broker id, since seconds, hidden)."""


@dataclass
class WriteBatch:
    """The writes of one loop wake-up, applied by Store.commit in one transaction in this order:
    users (new accounts), sends (claimed send ids; a private send's goes with its first mail row,
    see SendRecord.mail_id), mail (new mailbox rows, ids increasing), events (appended to the log;
    the stored counter follows the last one), acks (mail ids per recipient that leave the
    mailbox: no longer read, counted or pushed; their send ids stay loadable until pruned),
    last_seen (ends of sessions: name, seconds, hidden, last_seq), then prune.

    A request that fails is taken out again with rollback(mark()) taken before it; the ends of
    sessions are kept (they happened, whatever the request did after them).
    """

    users: list[UserRecord] = field(default_factory=list)
    sends: list[SendRecord] = field(default_factory=list)
    mail: list[m.PrivateMessage] = field(default_factory=list)
    events: list[tuple[int, bytes]] = field(default_factory=list)
    acks: list[tuple[str, list[int]]] = field(default_factory=list)
    last_seen: list[tuple[str, float, bool, int]] = field(default_factory=list)
    notices: list[Any] = field(default_factory=list)
    """broker.feed notices (OnlineNotice, OfflineNotice) for the other brokers of a shared store,
    appended to its feed in the same transaction; a store of one broker ignores them."""
    prune: tuple[int, float] | None = None
    """(events to keep, forget send ids stored before this time in seconds), or None. A store may
    spread the deleting over this and its next commits (a bounded amount each, so no commit waits
    behind a long prune); until it is done, load() may still return ids the prune forgets."""
    _mail_to: dict[str, list[m.PrivateMessage]] = field(default_factory=dict, repr=False)
    _acked: dict[str, set[int]] = field(default_factory=dict, repr=False)
    _indexed: tuple[int, int] = (0, 0)  # (mail, acks) entries in the two indexes above

    def __bool__(self) -> bool:
        return bool(self.users or self.sends or self.mail or self.events or self.acks or self.last_seen
                    or self.notices or self.prune)

    def extend(self, later: WriteBatch) -> None:
        """Append the writes of `later` (a batch of a later wake-up) to this one, so that both are
        committed in one transaction (group commit). Applying the merged batch in the order of
        this class's docstring gives the same rows as applying the two in turn: ids only grow, a
        row is deleted only after it was inserted, and the newer prune replaces the older."""
        self.users += later.users
        self.sends += later.sends
        self.mail += later.mail
        self.events += later.events
        self.acks += later.acks
        self.last_seen += later.last_seen
        self.notices += later.notices
        if later.prune is not None:
            self.prune = later.prune

    def add_event(self, event: m.Event, body: bytes | None = None) -> None:
        """Append `event` to the log, stored as its JSON body (docs/protocol.md 7.3): `body` when
        the caller has it encoded already (the PUB message's body), else encoded here."""
        self.events.append((event.seq, encode_json(event) if body is None else body))

    def mark(self) -> tuple[int, int, int, int, int]:
        """Where the rolled-back lists stand now (for rollback)."""
        return len(self.users), len(self.sends), len(self.mail), len(self.events), len(self.acks)

    def rollback(self, mark: tuple[int, int, int, int, int]) -> None:
        """Drop what was added since `mark` (last_seen and prune excepted)."""
        n_users, n_sends, n_mail, n_events, n_acks = mark
        del self.users[n_users:], self.sends[n_sends:], self.mail[n_mail:]
        del self.events[n_events:], self.acks[n_acks:]
        if self._indexed[0] > n_mail or self._indexed[1] > n_acks:  # the indexes hold what went
            self._mail_to, self._acked, self._indexed = {}, {}, (0, 0)  # rebuilt when next asked

    def _index(self) -> None:
        """Bring the per-recipient indexes of mail and acks up to date with the two lists (only
        the entries added since the last call are read, so a wake-up's lookups stay linear)."""
        n_mail, n_acks = self._indexed
        for x in self.mail[n_mail:]:
            self._mail_to.setdefault(x.to, []).append(x)
        for name, ids in self.acks[n_acks:]:
            self._acked.setdefault(name, set()).update(ids)
        self._indexed = (len(self.mail), len(self.acks))

    def pending_mail(self, recipient: str, after_id: int) -> list[m.PrivateMessage]:
        """Mail of this batch for `recipient` with id > after_id, not acked in this batch, oldest first."""
        self._index()
        acked = self._acked.get(recipient, set())
        return [x for x in self._mail_to.get(recipient, ()) if x.id > after_id and x.id not in acked]

    def acked(self, recipient: str) -> set[int]:
        """Mail ids of `recipient` deleted by this batch (do not change the set)."""
        self._index()
        return self._acked.get(recipient, set())


class Store(Protocol):
    """Persistent state behind the broker core (implementations: SqliteStore, MemoryStore, and
    broker.redisstore.RedisStore, shared by several brokers).

    shared: False for a store of one broker: the core numbers events itself and publishes them.
    True for a shared store (docs/scaling.md): commit() assigns each event of the batch the next
    global seq (the batch carries 0 and the body `{"seq":0,...}`), claims send ids against every
    broker's, and appends feed notices; the broker reads both back through a broker.feed.Backplane.

    Reads must reflect every batch handed to commit() earlier, also one still being committed.
    Errors: opening raises StoreError (unreadable, newer schema, or the data held by another
    broker); reads and commit() raise what the backend raises (the loop treats it as fatal:
    nothing of the batch was acknowledged).
    """

    def load(self, sends_since: float) -> Snapshot:
        """Everything the core keeps in memory (see Snapshot); send ids stored at or after
        `sends_since` (seconds since the epoch)."""
        ...

    def commit(self, batch: WriteBatch) -> set[tuple[str, str]] | None:
        """Apply `batch` in one transaction; durable (per the store's sync setting) on return.
        A shared store returns the (sender, send id) of the batch's sends another broker stored
        first (none of their mail or events was written: the loop drops their pushes); else None."""
        ...

    def mail_after(self, recipient: str, after_id: int, limit: int) -> list[m.PrivateMessage]:
        """Up to `limit` messages of `recipient`'s mailbox with id > after_id, oldest first."""
        ...

    def mail_by_ids(self, recipient: str, ids: list[int]) -> list[m.PrivateMessage]:
        """The messages of `recipient`'s mailbox among `ids` (at most 1000), oldest first."""
        ...

    def event_bodies_after(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` logged events with seq > after, oldest first, as (seq, JSON body bytes)."""
        ...

    def close(self) -> None:
        """Release the store (a pending batch must have been committed first)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether several brokers share this store (see the class docstring)."""
        ...
