"""What the other brokers of a shared store tell this one (broker.feed records read back by the
Backplane), applied to the core's state. A mixin of broker.core.BrokerCore; pure, like the others.

- LogEvent: every broker publishes every logged event on its own PUB, in seq order (the store
  numbered it at commit); the broadcast of a client of this broker is answered here, numbered.
- MailNotice: new mail for a user in session here is pushed (Commands._deliver_new). Mailbox sizes
  of everyone (for --mailbox-quota) are reloaded every minute (refresh: Store.refresh on the
  reading thread), so they may lag the other brokers' sends and acks by that much.
- UserNotice, SeenNotice: accounts and last-seen times (for login, send, `last`).
- OnlineNotice, OfflineNotice: who is in session where (`who`, `last`); of two sessions of one user
  the later login stays ((since, broker id) decides), the other ends with `replaced`, as on one broker.
- DupNotice: a send id was stored by another broker first (a client retried there, then here):
  nothing was stored again; a waiting broadcast is answered with the first reply.
- FeedLost: notices were trimmed before this broker read them (it fell far behind): every session
  here has its mailbox pushed again from the start, and the others' state is reloaded.
"""

from __future__ import annotations

import logging

import msgspec

from zmq_chat.broker.corebase import CoreBase
from zmq_chat.broker.feed import (
    DupNotice, FeedItem, FeedLost, LogEvent, MailNotice, OfflineNotice, OnlineNotice, SeenNotice, UserNotice,
)
from zmq_chat.broker.reads import ReadJob
from zmq_chat.broker.storage import Snapshot
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.replies import BroadcastReply

log = logging.getLogger(__name__)

_event = msgspec.json.Decoder(m.Event)


class Remote(CoreBase):
    """Backplane items; mixed into BrokerCore (the state they use: broker.corebase.CoreBase)."""

    def on_backplane(self, items: list[FeedItem]) -> None:
        """Apply `items` (broker.feed records, in the order read). A bad item is logged and
        skipped: it never stops the others. broker.feed.EpochLost is the loop's (it stops)."""
        for item in items:
            try:
                self._apply(item)
            except Exception:
                log.exception("internal error applying a backplane item %s", type(item).__name__)

    def _apply(self, item: FeedItem) -> None:
        if isinstance(item, LogEvent):
            self._logged(item)
        elif isinstance(item, MailNotice):
            msg = item.msg
            self.mail_counts[msg.to] = self.mail_counts.get(msg.to, 0) + 1
            rs = self.by_user.get(msg.to)
            if rs is not None and msg.id not in rs.inflight:
                self._deliver_new(rs, msg)
        elif isinstance(item, UserNotice):
            self.users.setdefault(item.record.name, item.record)
        elif isinstance(item, SeenNotice):
            record = self.users.get(item.user)
            if record is not None:
                record.last_seen, record.last_seen_hidden, record.last_seq = item.when, item.hidden, item.last_seq
        elif isinstance(item, OnlineNotice):
            self._online_elsewhere(item)
        elif isinstance(item, OfflineNotice):
            if self.remote.get(item.user, ("",))[0] == item.broker:
                del self.remote[item.user]
        elif isinstance(item, DupNotice):
            self._dup(item)
        elif isinstance(item, FeedLost):
            self._resync(item.stream)

    def _logged(self, item: LogEvent) -> None:
        """Publish a numbered event on the PUB; answer the broadcast it is, if it was sent here."""
        if item.seq <= self.seq:
            return  # read already (the reader starts where load() left off; a repeat is dropped)
        if item.seq > self.seq + 1 and self.seq:
            log.warning("event log: seq %d follows %d; the events between were pruned before this broker read "
                        "them (clients repair what history still holds)", item.seq, self.seq)
        self.seq = item.seq
        event = _event.decode(item.body)
        self._out.pub.append((event.kind.encode("ascii"), item.body))
        if event.kind == "presence":  # (who is busy on the other brokers, for `who`)
            (self.remote_busy.add if event.event == "busy" else self.remote_busy.discard)(event.user)
        if event.kind != "bcast" or not event.cid:
            return
        waiting = self._pending_bcasts.pop((event.user, event.cid), None)
        record = self.sends.get(event.user, event.cid)
        if record is not None and waiting is not None:
            record.reply = record.reply.replace(b'"seq":0,', b'"seq":%d,' % item.seq, 1)
        for rid, req, dup in waiting or ():
            self._ok(rid, BroadcastReply(req=req, seq=item.seq, ts=event.ts, dup=dup))

    def _online_elsewhere(self, item: OnlineNotice) -> None:
        """`item.user` is in session on another broker: remember where; end the session here if
        that login is the later one (the same rule as two logins on one broker: the newer wins)."""
        known = self.remote.get(item.user)
        if known is None or known[0] == item.broker or (item.since, item.broker) > (known[1], known[0]):
            self.remote[item.user] = (item.broker, item.since, item.hidden)  # (an older login's notice: not)
        s = self.by_user.get(item.user)
        if s is not None and (item.since, item.broker) > (s.since, self.broker_id):
            log.info("session replaced user=%s (logged in on broker %s)", s.user, item.broker)
            self._end(s, None, "replaced", "you logged in from another place; this session ends")

    def _dup(self, item: DupNotice) -> None:
        """Our commit found `item.cid` of `item.sender` stored by another broker: keep its first
        reply for later retries; answer a broadcast waiting for its number with it (dup)."""
        record = self.sends.get(item.sender, item.cid)
        if record is not None:
            record.reply = item.reply.encode()
        waiting = self._pending_bcasts.pop((item.sender, item.cid), None)
        if not waiting:
            return
        fields = msgspec.json.decode(item.reply)
        for rid, req, _ in waiting:
            self._ok(rid, BroadcastReply(req=req, seq=fields.get("seq", 0), ts=fields.get("ts", 0.0), dup=True))

    def _resync(self, stream: str) -> None:
        """Notices of `stream` were lost: push every local session's mailbox again from its start
        (what is in flight or acked is skipped) and reload the others' state."""
        log.warning("backplane: entries of %s were trimmed before this broker read them; pushing the mailboxes "
                    "of %d sessions again and reloading accounts and sessions elsewhere", stream, len(self.sessions))
        for s in list(self.sessions.values()):
            s.cursor = 0
            s.backlog = True
            s.pump_gen += 1  # a read in flight reads again from the start when it is back
            self._pump(s)
        self.refresh()
        if self._pending_bcasts:  # their log entries may be among the lost: answer from the stored replies
            self._out.reads.append(ReadJob("bcasts", b"", 0, "", tuple(self._pending_bcasts)))

    def _answer_logged(self, replies: dict[tuple[str, str], bytes]) -> None:
        """Answer the broadcasts waiting for their log entry whose stored first reply (`replies`:
        (sender, send id) -> JSON) is numbered already (after lost notices: the entry may never come)."""
        for key, reply in replies.items():
            fields = msgspec.json.decode(reply)
            if key not in self._pending_bcasts or not fields.get("seq"):
                continue
            record = self.sends.get(*key)
            if record is not None:
                record.reply = reply
            for rid, req, dup in self._pending_bcasts.pop(key):
                self._ok(rid, BroadcastReply(req=req, seq=fields["seq"], ts=fields.get("ts", 0.0), dup=dup))

    def _repump(self) -> None:
        """Read again the mailboxes whose read failed (a shared store: call every tick)."""
        for s in self.sessions.values():
            if not s.reading and (s.backlog or s.dropped) and not s.busy and not s.detached:
                self._pump(s)

    def refresh(self) -> None:
        """Reload, off the loop, what this broker keeps of the other brokers' state: accounts,
        sessions elsewhere, mailbox sizes (call every minute and after lost notices)."""
        if self.shared:
            self._out.reads.append(ReadJob("refresh", b"", 0, "", ()))

    def _refreshed(self, snap: Snapshot) -> None:
        """Apply Store.refresh's Snapshot: new accounts and last-seen times, the sessions on other
        brokers, every mailbox's size (this broker's own changes not yet committed may be missing
        from it for a minute: the quota is approximate across brokers)."""
        for name, record in snap.users.items():
            known = self.users.setdefault(name, record)
            if known is not record:
                known.last_seen, known.last_seen_hidden, known.last_seq = \
                    record.last_seen, record.last_seen_hidden, record.last_seq
        self.remote = {u: entry for u, entry in snap.online.items() if entry[0] != self.broker_id}
        self.mail_counts = dict(snap.mail_counts)
