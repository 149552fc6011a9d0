"""An in-memory broker.storage.Store: the same contract as SqliteStore, nothing on disk.

For the core's unit tests (tests/core_harness.py) and the store contract tests; a broker could run on
it, but everything is gone when the process ends.
"""

from __future__ import annotations

import bisect
import copy
import uuid

from zmq_chat.broker.sendids import MAX_IDS
from zmq_chat.broker.storage import SendRecord, Snapshot, UserRecord, WriteBatch
from zmq_chat.protocol import messages as m


class MemoryStore:
    """Accounts, mailboxes, the event log and send ids in dicts (implements broker.storage.Store).

    Attributes (read them in tests): users {name: UserRecord}, mail {mail id: PrivateMessage},
    events {seq: JSON body bytes}, sends {(sender, cid): SendRecord}, seq, last_mail_id, commits
    (how many non-empty batches were committed), epoch (uuid4 hex, new per instance).

    Every send id is kept in `sends` (a private one too, whatever SendRecord.mail_id says), so an
    acked message's id stays loadable until pruned, as in SqliteStore; an ack deletes its mail at
    once, and a prune is done in full by the commit that carries it.
    """

    shared = False  # one broker: the core numbers and publishes events itself

    def __init__(self) -> None:
        self.users: dict[str, UserRecord] = {}
        self.mail: dict[int, m.PrivateMessage] = {}
        self.events: dict[int, bytes] = {}
        self.sends: dict[tuple[str, str], SendRecord] = {}
        self.seq = 0
        self.last_mail_id = 0
        self.commits = 0
        self.closed = False
        self.epoch = uuid.uuid4().hex

    def load(self, sends_since: float) -> Snapshot:
        """A deep copy of the state (the core must not share records with the store)."""
        counts: dict[str, int] = {}
        for msg in self.mail.values():
            counts[msg.to] = counts.get(msg.to, 0) + 1
        sends = sorted((x for x in self.sends.values() if x.ts >= sends_since), key=lambda x: x.ts)[-MAX_IDS:]
        return Snapshot(copy.deepcopy(self.users), self.seq, self.last_mail_id, counts, sends, self.epoch)

    def commit(self, batch: WriteBatch) -> None:
        """Apply `batch` (in WriteBatch's order)."""
        if not batch:
            return
        for u in batch.users:
            self.users.setdefault(u.name, copy.copy(u))
        for x in batch.sends:
            self.sends[(x.sender, x.cid)] = x  # an id forgotten by the core and used again: the new reply
        for msg in batch.mail:
            self.mail[msg.id] = msg
            self.last_mail_id = max(self.last_mail_id, msg.id)
        for seq, body in batch.events:
            self.events[seq] = body
            self.seq = seq
        for name, ids in batch.acks:
            for i in ids:
                if i in self.mail and self.mail[i].to == name:
                    del self.mail[i]
        for name, when, hidden, last_seq in batch.last_seen:
            record = self.users.get(name)
            if record is not None:
                record.last_seen, record.last_seen_hidden, record.last_seq = when, hidden, last_seq
        if batch.prune is not None:
            keep, sends_before = batch.prune
            for seq in [s for s in self.events if s <= self.seq - keep]:
                del self.events[seq]
            for key in [k for k, x in self.sends.items() if x.ts < sends_before]:
                del self.sends[key]
        self.commits += 1

    def mail_after(self, recipient: str, after_id: int, limit: int) -> list[m.PrivateMessage]:
        """Up to `limit` messages of `recipient`'s mailbox with id > after_id, oldest first."""
        ids = sorted(i for i, msg in self.mail.items() if msg.to == recipient and i > after_id)
        return [self.mail[i] for i in ids[:limit]]

    def mail_by_ids(self, recipient: str, ids: list[int]) -> list[m.PrivateMessage]:
        """The messages of `recipient`'s mailbox among `ids`, oldest first."""
        return [self.mail[i] for i in sorted(set(ids)) if i in self.mail and self.mail[i].to == recipient]

    def event_bodies_after(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` logged events with seq > after, oldest first, as (seq, JSON body bytes)."""
        seqs = sorted(self.events)
        start = bisect.bisect_right(seqs, after)
        return [(s, self.events[s]) for s in seqs[start:start + limit]]

    def close(self) -> None:
        """Mark the store closed (the state stays readable for tests)."""
        self.closed = True
