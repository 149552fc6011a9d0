"""The broker's state machine: every state change happens here, and nothing here touches a socket.

Input: requests as frame lists `[type, body]` with the sender's routing id, connection (fd) and
CURVE key; argon2id job results; ZAP requests; connection events of the socket monitors; PUB
subscriptions; clock ticks; unreachable peers; shutdown. Output, collected until `drain()`:
ROUTER messages, PUB messages, AuthJobs to run, connections to cut off, and the batch of store
writes (broker.storage.WriteBatch) they depend on (broker.corebase.Output). The loop (broker.loop)
commits that batch *before* sending any output, so every ok reply that acknowledges a message
follows its commit. The core reads the store only for message and event bodies; everything else it
needs (accounts, counters, mailbox sizes, send ids) is loaded at start and kept in memory.

The handlers are split by concern over mixins of the one BrokerCore class: broker.commands (session
commands, mailbox delivery), broker.accounts (hello, register, login, argon2id results) and
broker.links (ZAP, connections, PUB subscriptions and heartbeats) and broker.remote (what other
brokers of a shared store tell through the backplane). All of them derive from
broker.corebase.CoreBase: the shared state with its types, and the output queue with its undo.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from zmq_chat.broker.accounts import Accounts
from zmq_chat.broker.commands import Commands
from zmq_chat.broker.config import Config
from zmq_chat.broker.connections import Conn, ConnTable
from zmq_chat.broker.corebase import Output
from zmq_chat.broker.feed import OfflineNotice
from zmq_chat.broker.links import Links
from zmq_chat.broker.ratelimit import KeyedBuckets, TokenBucket
from zmq_chat.broker.remote import Remote
from zmq_chat.broker.sendids import SendIds
from zmq_chat.broker.session import Session
from zmq_chat.broker.storage import Store
from zmq_chat.protocol import wire
from zmq_chat.protocol.errors import ErrorCode, ProtocolError
from zmq_chat.protocol.replies import ErrorReply

log = logging.getLogger(__name__)

NO_SESSION_NEEDED = frozenset({b"hello", b"register", b"login", b"logout", b"ping"})
NOT_A_COMMAND = frozenset({b"ping", b"ack", b"history"})  # these do not reset the idle timer
FLOOD_CUT = 1
"""A connection refused this many bursts' worth of requests in a row (--rate-burst each) is cut
off: its backlog in libzmq goes with it, so a flooder stops costing the loop a reply per request."""
FLOOD_CUT_GRACE = 0.05
"""Seconds between deciding to cut a flooder and cutting it (its last replies leave first)."""
CUT_GRACE = 2.0
"""Seconds between ending a silent session and cutting its connection (the `end` push goes first)."""


class BrokerCore(Commands, Accounts, Links, Remote):
    """All broker state: sessions, connections, lockouts, pending argon2id work, the sequence counter.

    Args:
        config: the settings (broker.config.Config).
        store: the open store (broker.storage.Store): loaded here once; read for mail and event
            bodies; its writes leave in Output.writes, which the loop commits.
        pub_port: the bound PUB port, told to clients in the login reply.
        clock: returns seconds since the epoch (injected for tests).
        peer_behind: tells whether the peer on a connection fd leaves more than --backlog-limit
            bytes unread (the loop reads SIOCOUTQ; tests inject a fake). Large replies are refused
            with E_OVERLOADED while it does.
        broker_id: this broker's id in a shared store's backplane (store.shared; "" otherwise).
    """

    def __init__(self, config: Config, store: Store, pub_port: int, clock: Callable[[], float] = time.time,
                 peer_behind: Callable[[int], bool] = lambda fd: False, broker_id: str = "") -> None:
        self.cfg = config
        self.store = store
        self.pub_port = pub_port
        self.clock = clock
        self.peer_behind = peer_behind
        self.sessions = {}
        self.by_user = {}
        self.by_key = {}
        self.conns = ConnTable(config.max_conns_per_ip, config.login_timeout, config.key_timeout,
                               config.pending_limit, small_pending_limit=config.small_pending_limit)
        snap = store.load(clock() - config.sends_keep_seconds)
        self.users = snap.users
        self.seq = snap.seq
        self.last_mail_id = snap.last_mail_id
        self.mail_counts = snap.mail_counts
        self.sends = SendIds(snap.sends)
        self.shared = store.shared
        self.broker_id = broker_id
        self.epoch = snap.epoch
        self.mail_id_limit = snap.mail_id_limit
        self.remote = dict(snap.online)
        self.remote_busy = set()
        self._pending_bcasts = {}
        self.stopping = False
        self._current_req = None
        self._out = Output()
        self._later_cuts = []  # (when, connection, even if in use)
        self._req_mail = []  # (recipient, change) of mail counts by this request (for _undo)
        self._req_sends = []  # send ids this request claimed (for _undo)
        self._req_users = []  # accounts this request created (for _undo)
        self._batch_bytes = {}  # large-reply bytes queued per routing id this batch
        self.user_buckets = KeyedBuckets(config.rate_limit, config.rate_burst)  # flood control per user
        self._handlers: dict[bytes, Callable[[Session, Any], None]] = {
            b"who": self._who,
            b"last": self._last,
            b"broadcast": self._broadcast,
            b"send": self._send,
            b"busy": self._busy,
            b"idle": self._idle,
            b"hide": self._hide,
            b"appear": self._appear,
            b"status": self._status,
            b"history": self._history,
            b"ack": self._ack,
        }
        Accounts.__init__(self)
        Links.__init__(self)

    # -- output ---------------------------------------------------------------------------------
    def drain(self) -> Output:
        """Take the collected output: ROUTER and PUB messages, auth jobs, cuts, and the batch of
        store writes (Output.writes) to commit before any of them leaves."""
        self._dispatch_jobs()
        if self._later_cuts:
            now = self.clock()
            self._out.cuts.extend(c for when, c, force in self._later_cuts
                                  if when <= now and self.conns.get(c.fd) is c and (force or not c.bound))
            self._later_cuts = [entry for entry in self._later_cuts if entry[0] > now]
        out, self._out = self._out, Output()
        self._batch_bytes.clear()
        return out

    # -- requests -------------------------------------------------------------------------------
    def on_request(self, rid: bytes, frames: list[bytes], fd: int = -1, key: str = "", wire_bytes: int = 0) -> None:
        """Handle one request `[type, body]` from routing id `rid`, read from connection `fd`,
        whose frames carried the CURVE key `key` (Z85, "" with --insecure) and took `wire_bytes`
        bytes on the wire.

        A session answers only to requests carrying its own key: a request on its routing id with
        another key is treated as coming from a connection without a session. Never raises:
        protocol errors become error replies, a bug becomes E_INTERNAL and a log line; either way
        the request's store writes and queued output are undone first.
        """
        now = self.clock()
        conn = self.conns.message(fd, wire_bytes, now, key)
        ip = ""
        if conn is not None:
            conn.rid = rid
            ip = conn.ip
        self._current_req = None
        mark = self._mark()
        resumed: Session | None = None
        try:
            kind, request = wire.decode_request(frames)
            self._current_req = request.req
            session = self.sessions.get(rid)
            if session is not None and session.key != key:
                session = None  # someone else presents this routing id: not the session's owner
            if conn is not None and (kind != b"ack" or session is None):  # a session's acks: see _ack
                self._flood_control(conn, session, now)
            if session is not None:
                if self._attach(session, fd, conn):
                    resumed = session
                session.last_heard = now
                if kind not in NOT_A_COMMAND:
                    session.last_command = now
            if self.stopping:
                raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the broker is shutting down")
            if kind in NO_SESSION_NEEDED:
                self._no_session_request(rid, kind, request, ip, key, fd, session, conn)
            elif session is None:
                raise ProtocolError(ErrorCode.NOT_LOGGED_IN, "log in first")
            else:
                self._handlers[kind](session, request)
        except ProtocolError as exc:  # refused: the request changes nothing
            self._undo(mark)
            req = exc.req if self._current_req is None else self._current_req
            self._err(rid, ErrorReply.of(req, exc.code, exc.message, exc.fields))
        except Exception:  # a bug of ours: undo, answer, log, keep serving
            log.exception("internal error handling a request")
            self._undo(mark)
            self._err(rid, ErrorReply.of(self._current_req, ErrorCode.INTERNAL,
                                         "internal broker error; the request may be retried"))
        if resumed is not None:  # after the request, whatever became of it: its pushes are not undone
            self._resume(resumed)

    def _resume(self, s: Session) -> None:
        """Push the mailbox of session `s`, which came back on a new connection (its unacked
        pushes first). A bug here is logged and undone like a request's, the session kept."""
        mark = self._mark()
        try:
            self._pump(s)
        except Exception:
            log.exception("internal error resuming a session")
            self._undo(mark)

    def _flood_control(self, conn: Conn, session: Session | None, now: float) -> None:
        """Take a token of the user's bucket in a session, else of the connection's (--rate-limit
        per second, --rate-burst at once; a rate of 0 is no limit): a user's bucket outlives
        reconnects and new sessions, so cutting a flooder never refills it. Raises
        ProtocolError(E_RATE_LIMITED) with retry_after when it is empty; a connection refused
        FLOOD_CUT bursts' worth in a row is cut off."""
        if self.cfg.rate_limit <= 0:
            return
        if session is not None:
            wait = self.user_buckets.take(session.user, now)
        else:
            if conn.bucket is None:
                conn.bucket = TokenBucket(self.cfg.rate_limit, self.cfg.rate_burst)
            wait = conn.bucket.take(now)
        if wait == 0:
            conn.refused = 0
        else:
            conn.refused += 1
            if conn.refused == FLOOD_CUT * self.cfg.rate_burst:  # cut shortly: the replies leave first
                log.warning("cut connection ip=%s: %d requests in a row over its rate limit", conn.ip, conn.refused)
                self._later_cuts.append((now + FLOOD_CUT_GRACE, conn, True))
                self.new_conns.drain(conn.ip, now)  # and no new connection from there for a few seconds
            raise ProtocolError(ErrorCode.RATE_LIMITED, f"too many requests; retry in {wait:.2f} s",
                                fields={"retry_after": round(wait, 3)})

    def _attach(self, s: Session, fd: int, conn: Conn | None) -> bool:
        """A request of session `s` came on connection `fd`: follow it there. True when the
        session was detached (its connection closed): its mailbox is to be pushed again
        (on_request does it after the request, see _resume)."""
        if s.fd != fd:
            s.fd = fd
            if conn is not None:
                conn.bound = True
        if not s.detached:
            return False
        s.detached = False
        s.backlog = True
        return True

    # -- session end ----------------------------------------------------------------------------
    def _end(self, s: Session, presence: str | None, reason: str | None, message: str = "", cut: bool = False) -> None:
        """Remove session `s`; record last-seen; tell the client (reason) and everyone (presence).
        Its SUB connections are cut (the PUB admits only live sessions); with `cut` its request
        connection too (a peer that went silent)."""
        self.sessions.pop(s.rid, None)
        if self.by_user.get(s.user) is s:
            del self.by_user[s.user]
        if s.key and self.by_key.get(s.key) is s:
            del self.by_key[s.key]
            self._cut_key(s.key)
        conn = self.conns.get(s.fd)
        if conn is not None:
            conn.bound = False
            if cut:  # after a grace period, so the `end` push can still leave
                self._later_cuts.append((self.clock() + CUT_GRACE, conn, False))
        self._record_end(s.user, self.clock(), s.hidden, s.busy_seq if s.busy else self.seq)
        self._tell_others(OfflineNotice(s.user, self.broker_id))
        if reason:
            self._push(s.rid, wire.encode_end(reason, message))
        if presence:
            self._presence(s, presence)

    def on_unreachable(self, rid: bytes) -> None:
        """A ROUTER send to `rid` failed with EHOSTUNREACH: its client is gone; end the session."""
        s = self.sessions.get(rid)
        if s is not None:
            log.info("connection lost user=%s", s.user)
            self._end(s, "lost", None)

    def tick(self) -> None:
        """Periodic work (call about once a second): heartbeat and idle timeouts, silent
        connections, lockout purge, the PUB heartbeat."""
        now = self.clock()
        hb_cut = now - self.cfg.heartbeat_timeout
        idle_cut = now - self.cfg.idle_timeout
        for s in list(self.sessions.values()):
            if s.last_heard < hb_cut:
                log.info("heartbeat timeout user=%s", s.user)
                self._end(s, "lost", "heartbeat_timeout", "no heartbeat from your client; session ended", cut=True)
            elif s.last_command < idle_cut:
                log.info("idle timeout user=%s", s.user)
                self._end(s, "timeout", "idle_timeout",
                          f"logged out after {self.cfg.idle_timeout / 60:g} minutes without a command")
        self._purge_guards(now)
        self.user_buckets.purge(now)
        self._links_tick(now)
        if self.shared:
            self._repump()

    def prune(self) -> None:
        """Trim the event log to --history events and forget old send ids; with a shared store,
        reload the others' state (call now and then: the loop does every minute)."""
        before = self.clock() - self.cfg.sends_keep_seconds
        self.sends.prune(before)
        self.batch.prune = (self.cfg.history, before)
        self.refresh()  # (a shared store: the other brokers' accounts, sessions and mailbox sizes)

    def shutdown(self) -> None:
        """Tell every client the broker is stopping and record their last-seen times."""
        self.stopping = True
        for s in list(self.sessions.values()):
            self._end(s, None, "shutdown", "the broker is shutting down")
