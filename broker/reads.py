"""Reads of a shared store, answered later: the loop never waits on a Redis round trip.

With a store of one broker (SQLite) the core reads mail and event bodies at once: a local read
takes microseconds. A shared store is a network hop away, so there the core queues a ReadJob in
its output instead; the loop hands it to a reading thread once the output's batch is durable (so
the read sees every write before it), and the core finishes the request when the result is back
(on_read). Three requests read: a mailbox push beyond the cursor or of dropped pushes ("pump"),
`history`, and an `ack` of ids pushed in an earlier session ("ack").

A mixin of broker.core.BrokerCore (through broker.commands.Commands); pure: run_read is the only
function that touches the store, on the reading thread.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

from zmq_chat.broker.corebase import CoreBase
from zmq_chat.broker.session import Session
from zmq_chat.broker.storage import Store
from zmq_chat.protocol import wire
from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.replies import ErrorReply

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ReadJob:
    """One read for request `req` of `session` (routing id `rid`, user `user`): its result is
    applied only while that very session is live (not one that replaced it on the same routing id).

    kind "pump": args (dropped ids to push again: list[int], the cursor to read beyond or None,
    room: int, the session's pump generation: a result of an older one is read again); result
    (the dropped ones still stored, up to `room` messages beyond the cursor).
    kind "history": args (after, limit); result [(seq, body)]. kind "ack": args (ids to look up:
    list[int], how many in-flight ids the ack deleted at once: int); result: the looked-up ones
    still stored. kind
    "refresh" (rid b"", no session): result the store's refresh() Snapshot (accounts, sessions
    elsewhere, mailbox sizes). kind "bcasts" (no session): args [(sender, send id)] of broadcasts
    waiting for their log entry; result {(sender, send id): stored first reply JSON}.
    error: the exception of a failed read (result then None).
    """

    kind: str
    rid: bytes
    req: int
    user: str
    args: tuple
    session: Session | None = field(default=None, repr=False)
    result: Any = None
    error: BaseException | None = field(default=None, repr=False)


def run_read(store: Store, job: ReadJob) -> ReadJob:
    """Do `job`'s reads on `store` (on a reading thread). Returns job with result or error set."""
    try:
        if job.kind == "pump":
            dropped, cursor, room, _ = job.args
            job.result = (store.mail_by_ids(job.user, dropped) if dropped else [],
                          store.mail_after(job.user, cursor, room) if cursor is not None else [])
        elif job.kind == "history":
            job.result = store.event_bodies_after(*job.args)
        elif job.kind == "refresh":
            job.result = store.refresh()  # type: ignore[attr-defined]  # (a shared store's)
        elif job.kind == "bcasts":
            job.result = {}
            for sender in {x[0] for x in job.args}:
                for record in store.sends_of(sender, 0.0):  # type: ignore[attr-defined]
                    job.result[(sender, record.cid)] = record.reply
        else:
            job.result = store.mail_by_ids(job.user, job.args[0])
    except Exception as exc:  # the core answers E_INTERNAL (retry); the broker goes on
        job.error = exc
    return job


class SharedReads(CoreBase):
    """The shared store's deferred reads (see the module docstring)."""

    @abstractmethod
    def _finish_ack(self, s: Session, req: int, known: set[int], counted: int = 0) -> None:
        """Delete the acked ids `known` and answer (broker.commands)."""

    @abstractmethod
    def _history_reply(self, s: Session, req: int, after: int, rows: list[tuple[int, bytes]]) -> None:
        """Answer a `history` request with `rows` (broker.commands)."""

    def _read(self, job: ReadJob) -> None:
        """Queue `job` for the reading thread (it leaves with this wake-up's output)."""
        self._out.reads.append(job)

    def _pump_shared(self, s: Session) -> None:
        """Ask for the mail that _pump would read (one read in flight per session; a pump asked
        for meanwhile runs when it is back)."""
        if s.reading:
            s.repump = True
            return
        room = self.cfg.mail_window - len(s.inflight)
        if room <= 0 or not (s.dropped or s.backlog):
            return
        dropped = sorted(s.dropped)[:room]
        s.reading = True
        s.repump = False
        self._read(ReadJob("pump", s.rid, 0, s.user, (dropped, s.cursor if s.backlog else None, room, s.pump_gen),
                           session=s))

    def on_read(self, job: ReadJob) -> None:
        """Finish the request of `job`, whose read is done. Like a request it changes nothing when
        it fails (undone, E_INTERNAL); a session that ended meanwhile gets nothing."""
        if job.kind in ("refresh", "bcasts"):
            if job.error is not None:
                log.error("store %s read failed: %s", job.kind, job.error)
            elif job.kind == "refresh":
                self._refreshed(job.result)
            else:
                self._answer_logged(job.result)
            return
        s = job.session
        if s is None or self.sessions.get(s.rid) is not s:
            return  # the session ended (or was replaced on its routing id): nothing to finish
        mark = self._mark()
        try:
            if job.error is not None:
                log.error("store read for %s failed: %s", job.kind, job.error)
                if job.kind == "pump":
                    s.reading = False  # read again at the next tick (Remote._repump)
                elif job.kind == "ack":  # the ids known in flight were deleted already
                    self._finish_ack(s, job.req, set(), job.args[1])
                else:
                    self._err(s.rid, ErrorReply.of(job.req, ErrorCode.INTERNAL, "the store could not be read; retry"))
            elif job.kind == "pump":
                self._pumped(s, job)
            elif job.kind == "history":
                self._history_reply(s, job.req, job.args[0], [row for row in job.result if row[0] <= self.seq])
            else:
                self._finish_ack(s, job.req, {x.id for x in job.result} - self.batch.acked(s.user), job.args[1])
        except Exception:
            log.exception("internal error finishing a store read")
            self._undo(mark)

    def _pumped(self, s: Session, job: ReadJob) -> None:
        """Push what a pump read found, if still wanted: dropped ids not acked or pushed since;
        messages beyond the cursor, up to the room left. Reads again when more may wait."""
        s.reading = False
        dropped, cursor, _, gen = job.args
        if gen != s.pump_gen:  # the mailbox is pushed again from its start since (FeedLost): read anew
            self._pump_shared(s)
            return
        found, beyond = job.result
        room = self.cfg.mail_window - len(s.inflight)
        acked = self.batch.acked(s.user)
        s.dropped.difference_update(set(dropped) - {x.id for x in found})  # acked elsewhere: gone
        for msg in found:
            if msg.id in s.inflight:
                s.dropped.discard(msg.id)  # pushed since, by a notice
            elif room > 0 and msg.id in s.dropped and msg.id not in acked:
                s.dropped.discard(msg.id)
                s.inflight.add(msg.id)
                self._out.router.append((s.rid, wire.MSG, wire.encode_json(msg), msg.id))
                room -= 1
        if cursor is not None:
            complete = len(beyond) < job.args[2]
            for msg in beyond:  # every row moves the cursor past it or stops the loop: reads progress
                if msg.id <= s.cursor:
                    continue  # held as dropped (an id of another broker's lease), or pushed
                if msg.id in s.inflight or msg.id in acked:
                    s.cursor = msg.id  # pushed already (the mailbox is pushed again from its start)
                    continue
                if room <= 0:
                    complete = False
                    break
                s.inflight.add(msg.id)
                s.dropped.discard(msg.id)  # (a mailbox pushed again from its start: FeedLost)
                s.cursor = msg.id
                self._out.router.append((s.rid, wire.MSG, wire.encode_json(msg), msg.id))
                room -= 1
            if complete and not s.repump:
                s.backlog = False
        if s.repump or (room > 0 and (s.backlog or s.dropped)):
            self._pump_shared(s)
