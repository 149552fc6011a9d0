"""The base of broker.core.BrokerCore and of its handler mixins (broker.commands, broker.accounts,
broker.links): the state they share, declared with its types, and the queue every handler writes to.

A request's effects are queued here, never sent: ROUTER replies and pushes, PUB events, argon2id
jobs and cuts in an Output, and its store writes in that Output's WriteBatch. `_mark` and `_undo`
take back what a refused request queued. The methods each mixin implements for the others (`_end`
in BrokerCore, `_pump` in Commands, `_drop_jobs` in Accounts) are declared abstract, so mypy checks
every call of a handler against one signature. Pure: no socket, no clock of its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from zmq_chat.broker.config import Config
from zmq_chat.broker.connections import Conn, ConnTable
from zmq_chat.broker.ratelimit import KeyedBuckets
from zmq_chat.broker.sendids import SendIds
from zmq_chat.broker.session import Session
from zmq_chat.broker.storage import SendRecord, Snapshot, Store, UserRecord, WriteBatch
from zmq_chat.protocol import messages as m
from zmq_chat.protocol import wire
from zmq_chat.protocol.limits import MAX_COUNTER
from zmq_chat.protocol.replies import ErrorReply, Reply, encode_reply

if TYPE_CHECKING:  # pragma: no cover
    from zmq_chat.broker.accounts import AuthJob
    from zmq_chat.broker.reads import ReadJob

Mark = tuple[int, int, int, int, tuple[int, int, int, int, int], int]
"""Where the output, the sequence number and the store writes stood before a request (for _undo):
(ROUTER messages, PUB messages, jobs, seq, WriteBatch.mark(), reads)."""


@dataclass
class Output:
    """What the core asks the loop to do, in order, after committing the store.

    router: (routing id, kind, body, mail id or 0) per ROUTER message; a nonzero mail id marks a
    `msg` push (on EAGAIN the loop calls on_push_dropped). pub: (topic, body) per PUB message.
    jobs: argon2id work. cuts: connections to shut down (the loop checks fd, IP and port first).
    writes: the store writes to commit before any of the above leaves. reads: a shared store's
    reads (broker.reads), started once `writes` is durable, so they see it.
    """

    router: list[tuple[bytes, bytes, bytes, int]] = field(default_factory=list)
    pub: list[tuple[bytes, bytes]] = field(default_factory=list)
    jobs: list[AuthJob] = field(default_factory=list)
    cuts: list[Conn] = field(default_factory=list)
    writes: WriteBatch = field(default_factory=WriteBatch)
    reads: list[ReadJob] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.router or self.pub or self.jobs or self.cuts or self.writes or self.reads)


class CoreBase(ABC):
    """The broker state shared by BrokerCore and its mixins (set by BrokerCore.__init__).

    cfg: the settings; store: read for mail and event bodies only; pub_port: told at login;
    clock: seconds since the epoch; peer_behind(fd): the peer leaves more than --backlog-limit
    bytes unread. sessions by routing id, by_user by name, by_key by CURVE key (Z85); conns: the
    open connections; users: every account; seq: the newest event number; last_mail_id: the
    newest mail id; mail_counts: mailbox sizes by name; sends: the send ids in use; stopping: a
    shutdown began; user_buckets: flood control per user. The underscored rest is per request or
    per batch: the request id being handled, the queued output, delayed cuts (when, connection,
    even if in use), and what the request changed for _undo (mail counts (name, change), send
    ids claimed, accounts created), large-reply bytes queued per routing id this batch.

    With a shared store (shared True, docs/scaling.md): broker_id names this broker in the
    backplane; epoch is the log's id (login reply); mail ids stay <= mail_id_limit (this broker's
    lease); remote holds the sessions on other brokers (user -> (broker id, since, hidden)),
    remote_busy those of them busy, as their presence events said;
    _pending_bcasts the broadcasts waiting for their log entry ((sender, send id) -> [(routing id,
    req, a retry)]): the store numbers events, so a broadcast is answered when it comes back numbered.
    """

    cfg: Config
    store: Store
    pub_port: int
    clock: Callable[[], float]
    peer_behind: Callable[[int], bool]
    sessions: dict[bytes, Session]
    by_user: dict[str, Session]
    by_key: dict[str, Session]
    conns: ConnTable
    users: dict[str, UserRecord]
    seq: int
    last_mail_id: int
    mail_counts: dict[str, int]
    sends: SendIds
    stopping: bool
    user_buckets: KeyedBuckets
    shared: bool
    broker_id: str
    epoch: str
    mail_id_limit: int
    remote: dict[str, tuple[str, float, bool]]
    remote_busy: set[str]
    _pending_bcasts: dict[tuple[str, str], list[tuple[bytes, int, bool]]]
    _current_req: int | None
    _out: Output
    _later_cuts: list[tuple[float, Conn, bool]]
    _req_mail: list[tuple[str, int]]
    _req_sends: list[SendRecord]
    _req_users: list[str]
    _batch_bytes: dict[bytes, int]

    # -- implemented by the mixins and the core ---------------------------------------------------
    @abstractmethod
    def _end(self, s: Session, presence: str | None, reason: str | None, message: str = "", cut: bool = False) -> None:
        """End session `s` (broker.core): `presence` event (or None), `end` push `reason` (or None)."""

    @abstractmethod
    def _pump(self, s: Session) -> None:
        """Push mailbox messages of `s` while its window has room (broker.commands)."""

    @abstractmethod
    def _deliver_new(self, rs: Session, msg: m.PrivateMessage) -> None:
        """Push `msg`, new in the mailbox of `rs`, now or through the pump (broker.commands)."""

    @abstractmethod
    def _refreshed(self, snap: Snapshot) -> None:
        """Apply a shared store's refresh: accounts, sessions elsewhere, mailbox sizes (broker.remote)."""

    @abstractmethod
    def _answer_logged(self, replies: dict[tuple[str, str], bytes]) -> None:
        """Answer broadcasts waiting for their log entry from their stored replies (broker.remote)."""

    @abstractmethod
    def _drop_jobs(self, conn: Conn) -> None:
        """Drop the waiting argon2id jobs of connection `conn`, unrun (broker.accounts)."""

    # -- output ---------------------------------------------------------------------------------
    @property
    def batch(self) -> WriteBatch:
        """The store writes of the requests handled since the last drain()."""
        return self._out.writes

    def _ok(self, rid: bytes, reply: Reply) -> None:
        """Queue the reply `reply` (a protocol.replies ok Struct, e.g. AckReply(req=7, removed=2),
        carrying the request's req) for routing id `rid`."""
        kind, body = encode_reply(reply)
        self._out.router.append((rid, kind, body, 0))

    def _err(self, rid: bytes, reply: ErrorReply) -> None:
        """Queue the error reply `reply` (protocol.replies.ErrorReply: req, code, message and the
        extra fields of docs 6.2 that apply) for routing id `rid`."""
        self._ok(rid, reply)

    def _push(self, rid: bytes, frames: list[bytes], mail_id: int = 0) -> None:
        """Queue a push `[kind, body]` (`frames`, e.g. wire.encode_msg) for routing id `rid`;
        `mail_id` nonzero marks a `msg` push of that mail id."""
        self._out.router.append((rid, frames[0], frames[1], mail_id))

    def _presence(self, s: Session, event: str) -> None:
        """Publish a presence event (`event`: "login", "logout", ...) of `s`, unless it is hidden."""
        if not s.hidden and self.seq < MAX_COUNTER:  # past 2^53 presence is no longer published
            self._publish(m.Event(self._next_seq(), self.clock(), "presence", s.user, event=event))

    def _next_seq(self) -> int:
        """The seq of a new event: the next one; 0 with a shared store, which numbers it at commit."""
        return 0 if self.shared else self.seq + 1

    def _publish(self, event: m.Event) -> None:
        """Log `event` (its seq becomes the newest) and queue it on the PUB. With a shared store
        (event.seq 0) it is only logged: the PUB gets it when it comes back numbered (Remote)."""
        topic, body = wire.encode_event(event)
        self.batch.add_event(event, body)
        if not self.shared:
            self.seq = event.seq
            self._out.pub.append((topic, body))

    def _tell_others(self, notice: object) -> None:
        """Append a broker.feed notice for the other brokers of a shared store (else nothing)."""
        if self.shared:
            self.batch.notices.append(notice)

    # -- a request's changes and their undoing --------------------------------------------------------
    def _mark(self) -> Mark:
        """Where the output, the sequence and the store writes stand before a request (for _undo)."""
        if self._req_mail:  # (new lists only when used: most requests change none of them)
            self._req_mail = []
        if self._req_sends:
            self._req_sends = []
        if self._req_users:
            self._req_users = []
        return (len(self._out.router), len(self._out.pub), len(self._out.jobs), self.seq, self.batch.mark(),
                len(self._out.reads))

    def _undo(self, mark: Mark) -> None:
        """Drop the output, the store writes and the counters of a request that raised (ends of
        sessions excepted: they happened). Mail ids handed out stay used (never given twice);
        pushes of them are taken out of their sessions' windows, and pushes of mail that stays in
        the mailbox are pushed again later (as if dropped)."""
        n_router, n_pub, n_jobs, self.seq, writes, n_reads = mark
        for job in self._out.reads[n_reads:]:  # a pump read not made: the next pump asks again
            s = self.sessions.get(job.rid)
            if job.kind == "pump" and s is not None:
                s.reading = False
        del self._out.reads[n_reads:]
        created = {x.id for x in self.batch.mail[writes[2]:]}  # mail of this request: it goes
        self.batch.rollback(writes)
        for record in self._req_sends:
            self.sends.remove(record.sender, record.cid)
        for name in self._req_users:
            self.users.pop(name, None)
        for rid, _, _, mail_id in self._out.router[n_router:]:
            s = self.sessions.get(rid)
            if mail_id and s is not None:
                s.inflight.discard(mail_id)
                if mail_id not in created:
                    s.dropped.add(mail_id)
        del self._out.router[n_router:]
        del self._out.pub[n_pub:]
        del self._out.jobs[n_jobs:]
        for name, change in self._req_mail:
            self.mail_counts[name] = max(0, self.mail_counts.get(name, 0) - change)
        self._req_mail, self._req_sends, self._req_users = [], [], []

    def _record_end(self, user: str, when: float, hidden: bool, last_seq: int) -> None:
        """Remember the end of `user`'s session (seconds; hidden then; the last event seen)."""
        record = self.users.get(user)
        if record is not None:
            record.last_seen, record.last_seen_hidden, record.last_seq = when, hidden, last_seq
        self.batch.last_seen.append((user, when, hidden, last_seq))

    def _claim_send(self, sender: str, cid: str, ts: float, reply: bytes, mail_id: int = 0) -> bool:
        """Remember a new send id with its first reply's fields (JSON bytes; stored with the
        batch, in the mailbox row `mail_id` of a private send: see SendRecord). False, and nothing
        changes, when the sender already used this id: a retry."""
        if self.sends.get(sender, cid) is not None:
            return False
        record = SendRecord(sender, cid, ts, reply, mail_id)
        self.sends.add(record)
        self.batch.sends.append(record)
        self._req_sends.append(record)
        return True

    # -- reads: the store, less and plus the batch not yet committed --------------------------------
    def _mail_after(self, user: str, after_id: int, limit: int) -> list[m.PrivateMessage]:
        """Up to `limit` messages of `user`'s mailbox with id > after_id, oldest first: the store's
        and those of the batch not yet committed, less what the batch deletes."""
        acked = self.batch.acked(user)
        stored = [x for x in self.store.mail_after(user, after_id, limit + len(acked)) if x.id not in acked]
        return (stored + self.batch.pending_mail(user, after_id))[:limit]

    def _mail_by_ids(self, user: str, ids: list[int]) -> list[m.PrivateMessage]:
        """The messages of `user`'s mailbox among `ids`, stored or in the batch, oldest first."""
        wanted = set(ids)
        acked = self.batch.acked(user)
        found = [x for x in self.store.mail_by_ids(user, ids) if x.id not in acked]
        found += [x for x in self.batch.pending_mail(user, 0) if x.id in wanted]
        return sorted(found, key=lambda x: x.id)

    def _event_bodies_after(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` events with seq > after, oldest first, as (seq, JSON body): the logged
        ones, then those of the batch not yet committed (their numbers are all newer)."""
        rows = list(self.store.event_bodies_after(after, limit))
        if len(rows) < limit:
            rows += [e for e in self.batch.events if e[0] > after][:limit - len(rows)]
        return rows
