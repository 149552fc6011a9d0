"""The handlers of the session commands (docs/protocol.md section 5): who, last, broadcast, send,
ack, busy, idle, hide, appear, status, history, and the mailbox delivery they drive.

A mixin of broker.core.BrokerCore: the handlers change the core's state and queue output through
its helpers (`_ok`, `_err`, `_push`, `_publish`); nothing here touches a socket.
"""

from __future__ import annotations

from typing import Any

import msgspec

from zmq_chat.broker.feed import OnlineNotice
from zmq_chat.broker.reads import ReadJob, SharedReads
from zmq_chat.broker.sendrules import content_digest, refusal
from zmq_chat.broker.session import Session
from zmq_chat.protocol import messages as m
from zmq_chat.protocol import wire
from zmq_chat.protocol.errors import ErrorCode, ProtocolError
from zmq_chat.protocol.replies import (
    AckReply, BroadcastReply, BusyRecipient, BusyReply, EmptyReply, ErrorReply, HistoryReply, IdleReply, SendReply,
    StatusReply, UsersReply,
)
# seq and mail ids stay <= MAX_COUNTER (docs 3): past it broadcasts and sends get E_INTERNAL
from zmq_chat.protocol.limits import MAX_COUNTER
from zmq_chat.protocol.validation import validate_text, validate_username

BUSY_TEXT_BUDGET = 2000
"""Characters of auto-reply text one `send` reply carries in all: with many busy recipients each
text is shortened to its share, so a reply stays a few KiB (docs 6.1)."""

MAX_WAITING = 8
"""Retries of one broadcast answered when its log entry comes back (shared store); older ones go."""

ACK_IDS_PER_TOKEN = 100
"""An `ack` of up to 100 ids is free of flood control; a bigger one takes a token per 100 ids."""

class Commands(SharedReads):
    """Session command handlers; mixed into BrokerCore (the state they use: broker.corebase.CoreBase;
    the reads of a shared store, answered later: broker.reads.SharedReads)."""

    def _who(self, s: Session, r: m.Who) -> None:
        names = {o.user for o in self.sessions.values() if not o.hidden}
        names.update(u for u, (_, _, hidden) in self.remote.items() if not hidden)  # other brokers'
        names.add(s.user)
        self._names_reply(s, r.req, names)

    def _last(self, s: Session, r: m.Last) -> None:
        """Visible users online now, those whose last session ended visible within `minutes`,
        and the caller; a user who is online and hidden now is left out (docs 6.1, 9.6)."""
        names = {o.user for o in self.sessions.values() if not o.hidden}
        hidden_now = {o.user for o in self.sessions.values() if o.hidden}
        for u, (_, _, hidden) in self.remote.items():  # sessions on other brokers of a shared store
            (hidden_now if hidden else names).add(u)
        since = self.clock() - r.minutes * 60
        names.update(u.name for u in self.users.values()
                     if u.last_seen is not None and u.last_seen >= since and not u.last_seen_hidden
                     and u.name not in hidden_now)
        names.add(s.user)
        self._names_reply(s, r.req, names)

    def _names_reply(self, s: Session, req: int, names: set[str]) -> None:
        """`users` sorted, and `busy` (those of them online and busy, visible); cut to what fits in
        --reply-bytes (then `truncated` is true)."""
        users = sorted(names)
        busy_now = self._busy_names()
        budget = self.cfg.reply_bytes - 200
        cost = sum((len(u) + 3) * (2 if u in busy_now else 1) for u in users)
        truncated = cost > budget
        if truncated:
            kept, used = [], 0
            for u in users:
                used += (len(u) + 3) * (2 if u in busy_now else 1)
                if used > budget:
                    break
                kept.append(u)
            users = kept
        if cost > 16 * 1024 and self._refuse_large(s, cost):
            return
        self._ok(s.rid, UsersReply(req=req, users=users, busy=[u for u in users if u in busy_now], truncated=truncated))

    def _busy_names(self) -> set[str]:
        """Visible users online and busy: here, and (a shared store) on other brokers as their
        presence events said (broker.remote keeps `remote_busy`)."""
        names = {o.user for o in self.sessions.values() if o.busy and not o.hidden}
        names.update(u for u in self.remote_busy if u in self.remote and not self.remote[u][2])
        return names

    def _refuse_large(self, s: Session, size: int) -> bool:
        """Whether a large reply of `size` bytes must wait (then E_OVERLOADED is queued): more than
        --backlog-limit bytes of large replies are already queued to this session in this batch,
        or its peer leaves what it was sent unread (the kernel's send queue is full). So a client
        that never reads costs the broker a bounded amount of memory, not one reply per request."""
        queued = self._batch_bytes.get(s.rid, 0)
        allowed = queued + size <= self.cfg.backlog_limit if queued else not self.peer_behind(s.fd)
        if allowed:
            self._batch_bytes[s.rid] = queued + size
            return False
        self._err(s.rid, ErrorReply(req=self._current_req, code=ErrorCode.OVERLOADED,
                                    message="earlier replies are still unread; retry in a moment", retry_after=1.0))
        return True

    def _replay(self, s: Session, req: int, cid: str, digest: int) -> None:
        """Answer a retried send id with its first reply, marked dup: the stored fields (docs 9.2)
        as a BroadcastReply (they have `seq`), a SendReply or an ErrorReply.

        Raises ProtocolError(E_DUPLICATE_ID) when the id was used for a different message
        (`digest` is content_digest() of the request).
        """
        stored = self.sends.get(s.user, cid)
        assert stored is not None, "callers replay only a send id they found"
        waiting = self._pending_bcasts.get((s.user, cid))
        fields = msgspec.json.decode(stored.reply)
        if waiting is not None and fields.get("digest", digest) == digest:  # not numbered yet (shared store)
            if len(waiting) >= MAX_WAITING:  # (bounded: a client retrying in a loop keeps its newest tries)
                del waiting[0]
            waiting.append((s.rid, req, True))  # answered with the first when it is
            return
        if fields.pop("digest", digest) != digest:
            raise ProtocolError(ErrorCode.DUPLICATE_ID, f"the send id '{cid}' was already used for another message")
        status = fields.pop("status")
        fields["dup"] = True
        if status == "ok":
            self._ok(s.rid, msgspec.convert({"req": req, **fields}, BroadcastReply if "seq" in fields else SendReply))
        else:
            self._err(s.rid, msgspec.convert({"req": req, **fields}, ErrorReply))

    def _broadcast(self, s: Session, r: m.Broadcast) -> None:
        validate_text(r.text, self.cfg.max_message_chars)
        digest = content_digest([], r.text)
        if self.seq >= MAX_COUNTER:
            raise ProtocolError(ErrorCode.INTERNAL, "the sequence numbers are exhausted (2^53)")
        event = m.Event(self._next_seq(), self.clock(), "bcast", s.user, text=r.text, cid=r.id)
        fields = {"seq": event.seq, "ts": event.ts}
        if not self._claim_send(s.user, r.id, event.ts, wire.encode_json({"status": "ok", "digest": digest, **fields})):
            self._replay(s, r.req, r.id, digest)
            return
        self._publish(event)
        if self.shared:  # answered with its number when it comes back from the log (Remote._logged)
            self._pending_bcasts[(s.user, r.id)] = [(s.rid, r.req, False)]
        else:
            self._ok(s.rid, BroadcastReply(req=r.req, seq=event.seq, ts=event.ts, dup=False))

    def _send(self, s: Session, r: m.Send) -> None:
        """Store a private message in each known recipient's mailbox; push it to those online.

        The send id is claimed first (broker.sendids, in memory; stored with the batch): a retry
        changes nothing and gets the first reply. Mail ids are assigned here, increasing, so the reply is known before writing.
        Names without an account (`unknown`) and recipients whose mailbox holds --mailbox-quota
        messages (`full`) get nothing; the others do (docs 6.2).
        """
        validate_text(r.text, self.cfg.max_message_chars)
        to = list(dict.fromkeys(r.to))
        for name in to:  # a name that breaks the rule has no account: say so before storing anything
            if name not in self.users:  # (an account's name is valid: checked when it was made)
                validate_username(name)
        digest = content_digest(to, r.text)
        unknown, full, known = self._recipients(to)
        if not known:
            self._refuse_send(s, r, digest, unknown, full)
            return
        if self.last_mail_id + len(known) > self.mail_id_limit:
            raise ProtocolError(ErrorCode.INTERNAL, "the mail ids are exhausted (2^53, or this broker's lease)")
        now = self.clock()
        ids = {name: self.last_mail_id + k for k, name in enumerate(known, 1)}
        busy_now = [rs for rs in (self.by_user.get(n) for n in known)
                    if rs is not None and rs.busy and rs is not s and s.user not in rs.auto_replied]
        busy = []
        if busy_now:
            share = BUSY_TEXT_BUDGET // len(busy_now)  # the reply stays small: see BUSY_TEXT_BUDGET
            busy = [BusyRecipient(rs.user, rs.busy_text[:share]) for rs in busy_now]
        fields: dict[str, Any] = {"ids": ids, "ts": now, "busy": busy}
        if unknown or full:
            code, message = refusal(unknown, full, known)
            fields.update(unknown=unknown, full=full)
            record = {"status": "error", "code": code.value, "message": message, "digest": digest, **fields}
        else:
            record = {"status": "ok", "digest": digest, **fields}
        if not self._claim_send(s.user, r.id, now, wire.encode_json(record), self.last_mail_id + 1):
            self._replay(s, r.req, r.id, digest)
            return
        self.last_mail_id += len(known)
        for rs in busy_now:
            rs.auto_replied.add(s.user)
        self._store_mail(s.user, ids, now, r)
        if unknown or full:
            self._err(s.rid, ErrorReply(req=r.req, code=code, message=message, **fields, dup=False))
        else:
            self._ok(s.rid, SendReply(req=r.req, **fields, dup=False))

    def _recipients(self, to: list[str]) -> tuple[list[str], list[str], list[str]]:
        """Split the names `to` (in order) into (unknown: no account, full: a mailbox holding
        --mailbox-quota messages, known: the others, who get the message)."""
        quota, users, counts = self.cfg.mailbox_quota, self.users, self.mail_counts
        unknown: list[str] = []
        full: list[str] = []
        known: list[str] = []
        for n in to:
            (unknown if n not in users else full if counts.get(n, 0) >= quota else known).append(n)
        return unknown, full, known

    def _refuse_send(self, s: Session, r: m.Send, digest: int, unknown: list[str], full: list[str]) -> None:
        """Answer a send that no recipient gets: its first reply again when the id was used
        (ProtocolError(E_DUPLICATE_ID) for other content), else E_UNKNOWN_USER or E_MAILBOX_FULL
        (nothing is stored, so the id stays free)."""
        if self.sends.get(s.user, r.id) is not None:
            self._replay(s, r.req, r.id, digest)
            return
        code, message = refusal(unknown, full, [])
        self._err(s.rid, ErrorReply(req=r.req, code=code, message=message, ids={}, busy=[], unknown=unknown,
                                    full=full, dup=False))

    def _store_mail(self, sender: str, ids: dict[str, int], now: float, r: m.Send) -> None:
        """Write the message of send `r` (at `now`, seconds) to each recipient's mailbox under its
        mail id (`ids`: name -> id); push it to the recipients online, not busy and attached."""
        mail, counts, changes, by_user = self.batch.mail, self.mail_counts, self._req_mail, self.by_user
        group = list(ids) if len(ids) > 1 else []  # (one list for all: the messages are never changed)
        for name, mid in ids.items():
            msg = m.PrivateMessage(mid, sender, name, now, r.text, r.id, group)
            mail.append(msg)
            counts[name] = counts.get(name, 0) + 1
            changes.append((name, 1))
            recipient = by_user.get(name)
            if recipient is not None:
                self._deliver_new(recipient, msg)

    def _deliver_new(self, rs: Session, msg: m.PrivateMessage) -> None:
        """Push `msg`, new in the mailbox of session `rs`, now if it may (not busy or detached,
        room in the window, nothing older waiting), else leave it to the pump. With a shared
        store, mail of other brokers' leases can come with an id below the cursor: it is held as
        dropped (pushed first by the pump), since the pump reads only beyond the cursor."""
        if rs.busy or rs.detached or rs.backlog or len(rs.inflight) >= self.cfg.mail_window:
            rs.backlog = True
            if msg.id < rs.cursor:
                rs.dropped.add(msg.id)
            self._pump(rs)
            return
        rs.inflight.add(msg.id)
        rs.dropped.discard(msg.id)  # (a shared store's notice may come after a push of it was dropped)
        rs.cursor = max(rs.cursor, msg.id)
        self._out.router.append((rs.rid, wire.MSG, wire.encode_json(msg), msg.id))  # _push of wire.encode_msg

    def _pump(self, s: Session) -> None:
        """Push mailbox messages while the in-flight window has room (not while busy or
        detached): first those whose push was dropped (on_push_dropped), then those beyond the
        session's cursor, oldest first."""
        if s.busy or s.detached:
            return
        if self.shared:
            self._pump_shared(s)
            return
        room = self.cfg.mail_window - len(s.inflight)
        if room > 0 and s.dropped:
            ids = sorted(s.dropped)[:room]
            s.dropped.difference_update(ids)
            for msg in self._mail_by_ids(s.user, ids):
                s.inflight.add(msg.id)
                self._push(s.rid, wire.encode_msg(msg), msg.id)
            room = self.cfg.mail_window - len(s.inflight)
        if room <= 0 or not s.backlog:
            return
        rows = self._mail_after(s.user, s.cursor, room)
        for msg in rows:
            s.inflight.add(msg.id)
            s.cursor = msg.id
            self._push(s.rid, wire.encode_msg(msg), msg.id)
        if len(rows) < room:
            s.backlog = False

    def on_push_dropped(self, rid: bytes, mail_id: int) -> None:
        """A `msg` push of `mail_id` to `rid` could not be queued (EAGAIN: the peer is past its
        high-water mark). Frees its window slot; the next pump (after an ack) sends it again. It
        stays in the mailbox meanwhile."""
        s = self.sessions.get(rid)
        if s is None or mail_id not in s.inflight:
            return
        s.inflight.discard(mail_id)
        s.dropped.add(mail_id)

    def _ack(self, s: Session, r: m.Ack) -> None:
        if self.cfg.rate_limit > 0 and len(r.ids) > ACK_IDS_PER_TOKEN:  # the first 100 ids are free
            wait = self.user_buckets.take(s.user, self.clock(), len(r.ids) // ACK_IDS_PER_TOKEN)
            if wait > 0:
                raise ProtocolError(ErrorCode.RATE_LIMITED, f"too many requests; retry in {wait:.2f} s",
                                    fields={"retry_after": round(wait, 3)})
        wanted = set(r.ids) - self.batch.acked(s.user)
        known = {i for i in wanted if i in s.inflight or i in s.dropped}
        others = sorted(wanted - known)  # pushed in an earlier session: the store knows
        s.inflight.difference_update(r.ids)
        s.dropped.difference_update(r.ids)
        if others and self.shared:  # the loop does not wait on a shared store: the others are read first
            self._delete_acked(s, known)  # (what was in flight goes now, whatever the read does)
            self._read(ReadJob("ack", s.rid, r.req, s.user, (others, len(known)), session=s))
            return
        if others:
            known.update(x.id for x in self._mail_by_ids(s.user, others))
        self._finish_ack(s, r.req, known)

    def _finish_ack(self, s: Session, req: int, known: set[int], counted: int = 0) -> None:
        """Delete the acked mail ids `known` (all in `s.user`'s mailbox) with the batch, answer
        request `req` with how many (plus `counted` deleted before), push more."""
        self._delete_acked(s, known)
        self._ok(s.rid, AckReply(req=req, removed=len(known) + counted))
        self._pump(s)

    def _delete_acked(self, s: Session, known: set[int]) -> None:
        """Delete the mail ids `known` of `s.user`'s mailbox with the batch; count them down."""
        if known:
            self.batch.acks.append((s.user, sorted(known)))
            self.mail_counts[s.user] = max(0, self.mail_counts.get(s.user, 0) - len(known))
            self._req_mail.append((s.user, -len(known)))

    def _busy(self, s: Session, r: m.Busy) -> None:
        if len(r.text) > self.cfg.max_message_chars:
            raise ProtocolError(ErrorCode.MESSAGE_TOO_LONG, f"an auto-reply has at most {self.cfg.max_message_chars} characters")
        if not s.busy:
            s.busy = True
            self._presence(s, "busy")
            s.busy_seq = self.seq  # (a catch-up after a session that ended busy starts past that event)
            s.auto_replied = set()
        s.busy = True
        s.busy_text = r.text
        self._ok(s.rid, BusyReply(req=r.req, text=r.text))

    def _idle(self, s: Session, r: m.Idle) -> None:
        # every message up to the cursor was pushed in this session: unacked, it is in flight or dropped
        held = max(0, self.mail_counts.get(s.user, 0) - len(s.inflight) - len(s.dropped))
        if s.busy:
            self._presence(s, "available")
        s.busy = False
        s.busy_text = ""
        s.auto_replied = set()
        s.backlog = True
        self._ok(s.rid, IdleReply(req=r.req, held=held))
        self._pump(s)

    def _hide(self, s: Session, r: m.Hide) -> None:
        s.hidden = True
        self._tell_others(OnlineNotice(s.user, self.broker_id, s.since, True))
        self._ok(s.rid, EmptyReply(req=r.req))

    def _appear(self, s: Session, r: m.Appear) -> None:
        s.hidden = False
        self._tell_others(OnlineNotice(s.user, self.broker_id, s.since, False))
        self._ok(s.rid, EmptyReply(req=r.req))

    def _status(self, s: Session, r: m.Status) -> None:
        self._ok(s.rid, StatusReply(req=r.req, user=s.user, busy=s.busy, busy_text=s.busy_text,
                                    hidden=s.hidden, since_ts=s.since))

    def _history(self, s: Session, r: m.History) -> None:
        """The oldest kept events after `after`: at most `limit` (capped at --history) and at most
        --reply-bytes of event JSON (at least one event); `complete` tells whether they reach `seq`."""
        limit = min(r.limit, self.cfg.history)
        if r.after < self.seq and self.shared:  # the loop does not wait on a shared store: answered when read
            self._read(ReadJob("history", s.rid, r.req, s.user, (r.after, limit), session=s))
            return
        rows = self._event_bodies_after(r.after, limit) if r.after < self.seq else []
        self._history_reply(s, r.req, r.after, rows)

    def _history_reply(self, s: Session, req: int, after: int, rows: list[tuple[int, bytes]]) -> None:
        """Answer `history` request `req` of `s` (after `after`) with the logged events `rows`
        (oldest first), cut to --reply-bytes; `complete` when they reach self.seq."""
        events: list[tuple[int, bytes]] = []
        size = 0
        for seq, body in rows:
            size += len(body) + 1
            if events and size > self.cfg.reply_bytes:
                break
            events.append((seq, body))
        if size > 16 * 1024 and self._refuse_large(s, size):
            return
        complete = (not events and after >= self.seq) or bool(
            events and events[0][0] == after + 1 and events[-1][0] == self.seq
        )
        # the stored Event bodies go out as they are (msgspec.Raw), not decoded and encoded again
        self._ok(s.rid, HistoryReply(req=req, events=[msgspec.Raw(b) for _, b in events],  # type: ignore[misc]
                                     seq=self.seq, complete=complete))
