"""The send ids the broker remembers for retried sends, held in memory (docs/protocol.md 9.2).

A client retries a `send` or `broadcast` it got no reply for with the same `id`; the broker answers
the retry with the first reply instead of storing the message twice. The ids are loaded from the
store at start (so a retry after a broker restart is still recognised) and kept here, so no send
waits on a read of the store. Memory is bounded: at most MAX_IDS ids and MAX_REPLY_BYTES bytes of
stored replies; beyond either, or --sends-keep-seconds, the oldest ids are forgotten (a retry of a
forgotten id is stored as a new message).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

from zmq_chat.broker.storage import SendRecord

MAX_IDS = 131_072
"""Send ids remembered at most, all senders together (about 17 s of sends at 8k/s, hours in a chat)."""
MAX_REPLY_BYTES = 32 * 1024 * 1024
"""Bytes of first replies remembered at most, all senders together."""


class SendIds:
    """Recent send ids: (sender, cid) -> SendRecord, oldest first.

    Args:
        records: ids to start with (Store.load's Snapshot.sends), oldest first.
        max_ids, max_reply_bytes: the bounds (MAX_IDS, MAX_REPLY_BYTES by default).
    """

    def __init__(self, records: Iterable[SendRecord] = (), max_ids: int = MAX_IDS,
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        self._ids: OrderedDict[tuple[str, str], SendRecord] = OrderedDict()
        self._bytes = 0
        self.max_ids = max_ids
        self.max_reply_bytes = max_reply_bytes
        for record in records:
            self.add(record)

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, sender: str, cid: str) -> SendRecord | None:
        """The record of `sender`'s earlier send `cid`, or None."""
        return self._ids.get((sender, cid))

    def add(self, record: SendRecord) -> None:
        """Remember `record` (its id must be new); forget the oldest ids beyond the bounds."""
        self._ids[(record.sender, record.cid)] = record
        self._bytes += len(record.reply)
        while len(self._ids) > self.max_ids or self._bytes > self.max_reply_bytes:
            _, old = self._ids.popitem(last=False)
            self._bytes -= len(old.reply)

    def remove(self, sender: str, cid: str) -> None:
        """Forget one id (a request that claimed it failed and was undone)."""
        record = self._ids.pop((sender, cid), None)
        if record is not None:
            self._bytes -= len(record.reply)

    def prune(self, before: float) -> None:
        """Forget the ids stored before `before` (seconds since the epoch)."""
        while self._ids:
            key, record = next(iter(self._ids.items()))
            if record.ts >= before:
                return
            del self._ids[key]
            self._bytes -= len(record.reply)
