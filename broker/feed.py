"""What brokers sharing one store tell each other (the backplane), as typed records.

With a shared store (broker.redisstore, `--store redis://...`) several brokers are one chat. Each
broker's commits append, in the same transaction as the writes they describe, entries to the
streams the brokers read back (broker.redisfeed.RedisBackplane):

- the event log: broadcasts and presence with one global, gapless sequence number assigned by the
  store at commit (LogEvent). Every broker publishes every entry on its own PUB, in seq order; the
  broker whose client sent a broadcast answers it when its LogEvent comes back.
- the feed: notices of what changed elsewhere (the others): new accounts (UserNotice), ends of
  sessions (SeenNotice), sessions starting, hiding, appearing and ending (OnlineNotice,
  OfflineNotice), for every broker; new mail for a recipient in session on a broker (MailNotice),
  for that broker only; and, for the broker that made the commit, a send id found already used by
  another broker (DupNotice). Mailbox sizes of the others' users are read again (Store.refresh).

Notices whose origin is the reading broker are dropped by the reader, except DupNotice (only for
its origin). Plain data: no I/O, no zmq, no Redis.
"""

from __future__ import annotations

from typing import Callable, Protocol, Union

import msgspec

from zmq_chat.broker.storage import UserRecord
from zmq_chat.protocol import messages as m


class LogEvent(msgspec.Struct, frozen=True):
    """One event of the global log: seq (int, 1, 2, 3 ... without gaps across all brokers) and
    body (bytes, the Event JSON, docs/protocol.md 7.3, its `seq` field equal to seq)."""

    seq: int
    body: bytes


class MailNotice(msgspec.Struct, frozen=True):
    """A private message stored by another broker (msg.to may be in session here)."""

    msg: m.PrivateMessage


class UserNotice(msgspec.Struct, frozen=True):
    """An account created on another broker."""

    record: UserRecord


class SeenNotice(msgspec.Struct, frozen=True):
    """A session of `user` ended on another broker: when (seconds since the epoch), hidden then,
    last_seq (the event seq seen at that end): the fields of UserRecord.last_*."""

    user: str
    when: float
    hidden: bool
    last_seq: int


class OnlineNotice(msgspec.Struct, frozen=True):
    """`user` is in session on broker `broker` (its id) since `since` (seconds), hidden or not.
    Sent at login and again at hide/appear. A broker holding an older session of the same user
    ends it ("replaced"): (since, broker) orders two logins, the greater one stays."""

    user: str
    broker: str
    since: float
    hidden: bool


class OfflineNotice(msgspec.Struct, frozen=True):
    """The session of `user` on broker `broker` ended (logout, timeout, replaced, or the broker
    died and was reaped by another)."""

    user: str
    broker: str


class DupNotice(msgspec.Struct, frozen=True):
    """A send id of this broker's commit was already in the shared store (a client retried a send
    on this broker that another broker had stored): nothing of that send was stored again. reply:
    the stored first reply (str holding the JSON of SendRecord.reply, with `status` and `digest`)."""

    sender: str
    cid: str
    reply: str


class FeedLost(msgspec.Struct, frozen=True):
    """Entries of `stream` (its name) were trimmed before this broker read them (it fell more
    than the stream's length behind): notices were lost. The broker pushes the mailboxes of its
    sessions again from their start (what is in flight is skipped) and reloads what it keeps of
    the others' state (accounts, sessions elsewhere, mailbox sizes: Store.refresh)."""

    stream: str


class EpochLost(msgspec.Struct, frozen=True):
    """The shared store no longer holds this broker's epoch (it lost its data or was replaced):
    the broker must stop. reason: for the log."""

    reason: str


Notice = Union[MailNotice, UserNotice, SeenNotice, OnlineNotice, OfflineNotice, DupNotice, FeedLost]
FeedItem = Union[LogEvent, Notice, EpochLost]


class Backplane(Protocol):
    """The reading side of a shared store: a thread that reads the log and the feed from where
    Store.load left them, and keeps this broker's liveness (implementation:
    broker.redisfeed.RedisBackplane)."""

    broker_id: str
    """This broker's id (str, unique per process start): the origin of its notices."""

    def start(self, wake: Callable[[], None]) -> None:
        """Start reading; call `wake()` (from the reading thread) when items are ready."""
        ...

    def drain(self) -> list[FeedItem]:
        """The items read since the last call, each stream in its order (LogEvents by seq)."""
        ...

    def close(self) -> None:
        """Stop the thread and remove this broker's liveness key, without reaping its sessions
        (the broker ended them with OfflineNotices before)."""
        ...
