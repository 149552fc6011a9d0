"""Group commit off the message loop: a writer thread commits the loop's batches of store writes
while the loop goes on handling the next requests (issue 9).

The loop hands each wake-up's WriteBatch to `CommitWriter.submit`, which returns at once with a
ticket (1, 2, 3, ...), and holds that wake-up's replies, deliveries and PUB events until
`settle()` reports the ticket durable. The writer thread takes every batch queued meanwhile,
merges them (WriteBatch.extend) and commits them in one transaction: one fsync for all the
wake-ups that arrived during the previous one. sqlite3 releases the GIL while it steps and
fsyncs, so the commit runs on the second core.

The core still reads the store for message and event bodies; until the loop has seen a batch
settle, those reads add the batch's rows (and leave out its acks) so that the core sees every
write it made, committed or not (the broker.storage.Store contract). Only the loop thread calls
anything here but the thread's own loop.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

from zmq_chat.broker.storage import SendRecord, Snapshot, Store, UserRecord, WriteBatch
from zmq_chat.protocol import messages as m

log = logging.getLogger(__name__)


class CommitWriter:
    """A Store for the core whose commits run on a writer thread.

    Args:
        store: the store that commits and reads (e.g. SqliteStore; its commit runs on the writer
            thread while its reads run on the caller's, so it must allow both at once).
        on_durable: called on the writer thread after each commit (or failure), e.g. to wake the
            loop's poll; must not block.
    The reads (mail_after, mail_by_ids, event_bodies_after) have the Store signatures and include
    every submitted batch. An exception from the store's commit stops the thread; `settle()`
    raises it on the loop thread (nothing of that batch or later ones was acknowledged).
    """

    def __init__(self, store: Store, on_durable: Callable[[], None] = lambda: None, record: bool = False) -> None:
        self.store = store
        self.on_durable = on_durable
        self.commits: list[tuple[float, int]] | None = [] if record else None
        """With `record`: (seconds the commit took, wake-ups it covered) per commit (--stage-times)."""
        self.submitted = 0
        """Ticket of the newest batch submitted (0 before the first)."""
        self._unsettled: collections.deque[tuple[int, WriteBatch]] = collections.deque()  # loop thread only
        self._queue: list[tuple[int, WriteBatch]] = []
        self._durable = 0
        self._dups: set[tuple[str, str]] = set()  # sends another broker stored first (take_dups)
        self._error: BaseException | None = None
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    # -- the loop's side ------------------------------------------------------------------------
    def claim_user(self, record: UserRecord) -> bool:
        """The wrapped shared store's claim_user (broker.redisstore; called on a hashing thread):
        True when the account was stored, False when the name is taken. Raises what it raises."""
        return self.store.claim_user(record)  # type: ignore[attr-defined]

    def sends_of(self, sender: str, since: float) -> list[SendRecord]:
        """The wrapped shared store's sends_of (called on a hashing thread): `sender`'s send ids
        stored at or after `since` (seconds) by any broker. Raises what it raises."""
        return self.store.sends_of(sender, since)  # type: ignore[attr-defined]

    @property
    def shared(self) -> bool:
        """The wrapped store's `shared` (broker.storage.Store)."""
        return self.store.shared

    def load(self, sends_since: float) -> Snapshot:
        """The store's Snapshot (call before the first submit)."""
        return self.store.load(sends_since)

    def submit(self, batch: WriteBatch) -> int:
        """Queue `batch` (not changed afterwards by the caller) for commit. Returns its ticket;
        an empty batch gets the ticket of the newest batch before it, so output that waits for
        it waits for everything submitted earlier."""
        if not batch:
            return self.submitted
        self.submitted += 1
        entry = (self.submitted, batch)
        self._unsettled.append(entry)
        with self._cond:
            self._queue.append(entry)
            self._cond.notify()
        return self.submitted

    def take_dups(self) -> set[tuple[str, str]]:
        """The (sender, send id) of sends that durable commits found stored by another broker (a
        shared store's commit result), since the last call: their mail was not stored."""
        with self._cond:
            dups, self._dups = self._dups, set()
        return dups

    def settle(self) -> int:
        """The newest durable ticket; forgets the settled batches (their rows are readable from
        the store now). Raises the commit's exception if the writer thread failed."""
        with self._cond:
            durable, error = self._durable, self._error
        if error is not None:
            raise error
        while self._unsettled and self._unsettled[0][0] <= durable:
            self._unsettled.popleft()
        return durable

    def wait(self, timeout: float | None = None) -> int:
        """Block until every submitted batch is durable (shutdown), or `timeout` seconds pass.
        Returns settle()'s ticket; raises like settle()."""
        with self._cond:
            self._cond.wait_for(lambda: self._durable >= self.submitted or self._error is not None, timeout)
        return self.settle()

    def commit(self, batch: WriteBatch) -> None:
        """Submit `batch` and wait until it is durable (for callers outside the loop)."""
        self.submit(batch)
        self.wait()

    def close(self) -> None:
        """Commit what is queued, stop the thread, close the store. Raises like settle()."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        try:
            self.settle()
        finally:
            self.store.close()

    # -- reads: the store plus the batches not yet settled -------------------------------------------
    def mail_after(self, recipient: str, after_id: int, limit: int) -> list[m.PrivateMessage]:
        """Up to `limit` messages of `recipient`'s mailbox with id > after_id, oldest first."""
        if not self._unsettled:
            return self.store.mail_after(recipient, after_id, limit)
        acked, pending = self._pending(recipient, after_id)
        stored = self.store.mail_after(recipient, after_id, limit + len(acked))
        return _merge(stored, pending, acked)[:limit]

    def mail_by_ids(self, recipient: str, ids: list[int]) -> list[m.PrivateMessage]:
        """The messages of `recipient`'s mailbox among `ids` (at most 1000), oldest first."""
        if not self._unsettled:
            return self.store.mail_by_ids(recipient, ids)
        wanted = set(ids)
        acked, pending = self._pending(recipient, 0)
        return _merge(self.store.mail_by_ids(recipient, ids), [x for x in pending if x.id in wanted], acked)

    def event_bodies_after(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` logged events with seq > after, oldest first, as (seq, JSON body bytes)."""
        rows = list(self.store.event_bodies_after(after, limit))
        newest = rows[-1][0] if rows else after  # a batch committed but not settled is in both
        for _, batch in self._unsettled:
            if len(rows) >= limit:
                break
            rows += [e for e in batch.events if e[0] > newest][:limit - len(rows)]
        return rows

    def _pending(self, recipient: str, after_id: int) -> tuple[set[int], list[m.PrivateMessage]]:
        """(ids acked by unsettled batches, their mail for `recipient` with id > after_id)."""
        acked: set[int] = set()
        pending: list[m.PrivateMessage] = []
        for _, batch in self._unsettled:
            acked |= batch.acked(recipient)
            pending += batch.pending_mail(recipient, after_id)
        return acked, pending

    # -- the writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return
                entries, self._queue = self._queue, []
            batch = entries[0][1]
            if len(entries) > 1:
                batch = WriteBatch()
                for _, later in entries:
                    batch.extend(later)
            started = time.monotonic()
            try:
                dups = self.store.commit(batch)
            except BaseException as exc:  # the loop re-raises it; nothing later is committed
                log.critical("store commit failed: %s", exc)
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                self.on_durable()
                return
            if self.commits is not None and len(self.commits) < 1_000_000:
                self.commits.append((time.monotonic() - started, len(entries)))
            with self._cond:
                if dups:
                    self._dups |= dups
                self._durable = entries[-1][0]
                self._cond.notify_all()
            self.on_durable()


def _merge(stored: list[m.PrivateMessage], pending: list[m.PrivateMessage], acked: set[int]) -> list[m.PrivateMessage]:
    """Stored and pending messages less the acked ids, each id once, oldest first (a batch
    committed but not yet settled is in both lists)."""
    seen = {x.id for x in stored}
    merged = [x for x in stored if x.id not in acked] + [x for x in pending if x.id not in seen and x.id not in acked]
    merged.sort(key=lambda x: x.id)
    return merged
