"""The broker's state machine: every state change happens here, and nothing here touches a socket.

Input: requests as frame lists `[type, body]` with the sender's routing id (and peer IP for logins),
argon2id job results, clock ticks, unreachable peers, shutdown. Output, collected until `drain()`:
ROUTER messages `(routing_id, [kind, body])`, PUB messages `[topic, body]`, and AuthJobs to run.
The loop (broker.loop) commits the store *before* sending any output, so every ok reply that
acknowledges a message follows its commit.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any, Callable

import msgspec

from broker.auth import AuthJob
from broker.config import Config
from broker.lockout import LoginGuard
from broker.session import Session
from broker.store import Store
from protocol import messages as m
from protocol import wire
from protocol.errors import ErrorCode, ProtocolError
from protocol.validation import validate_password, validate_text, validate_username
from protocol.version import PROTOCOL_VERSION

log = logging.getLogger("broker")

NO_SESSION_NEEDED = frozenset({b"hello", b"register", b"login", b"ping"})
NOT_A_COMMAND = frozenset({b"ping", b"ack", b"history"})  # these do not reset the idle timer


def content_digest(to: list[str], text: str) -> int:
    """CRC-32 of a send's recipients and text: tells a retry (same id, same content) from a reused id."""
    return zlib.crc32("\x00".join([*to, text]).encode("utf-8", "surrogatepass"))


class BrokerCore:
    """All broker state: sessions, lockouts, pending argon2id work, the sequence counter.

    Args:
        config: the settings (broker.config.Config).
        store: the open Store; the core writes to it, the loop commits it.
        pub_port: the bound PUB port, told to clients in the login reply.
        clock: returns seconds since the epoch (injected for tests).
    """

    def __init__(self, config: Config, store: Store, pub_port: int, clock: Callable[[], float] = time.time):
        self.cfg = config
        self.store = store
        self.pub_port = pub_port
        self.clock = clock
        self.sessions: dict[bytes, Session] = {}
        self.by_user: dict[str, Session] = {}
        self.guard = LoginGuard(config.max_login_attempts, config.block_seconds)
        self.pending_auth: set[bytes] = set()  # routing ids with a job in flight
        self.pending_pairs: set[tuple[str, str]] = set()  # (user, ip) with a verify in flight
        self.pending_names: set[str] = set()  # names being registered
        self.users: set[str] = store.user_names()
        self.seq = store.last_seq()
        self.last_mail_id = store.last_mail_id()
        self.stopping = False
        self._router: list[tuple[bytes, list[bytes]]] = []
        self._pub: list[list[bytes]] = []
        self._jobs: list[AuthJob] = []
        self._handlers: dict[bytes, Callable[[Session, Any], None]] = {
            b"logout": self._logout,
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

    # -- output ---------------------------------------------------------------------------------
    def drain(self) -> tuple[list[tuple[bytes, list[bytes]]], list[list[bytes]], list[AuthJob]]:
        """Take the collected output: (ROUTER messages, PUB messages, auth jobs)."""
        out = (self._router, self._pub, self._jobs)
        self._router, self._pub, self._jobs = [], [], []
        return out

    def _ok(self, rid: bytes, req: int | None, fields: dict[str, Any] | None = None) -> None:
        self._router.append((rid, wire.encode_ok(req, fields)))

    def _err(self, rid: bytes, req: int | None, code: ErrorCode, message: str, fields: dict | None = None) -> None:
        self._router.append((rid, wire.encode_error(req, code, message, fields)))

    # -- requests -------------------------------------------------------------------------------
    def on_request(self, rid: bytes, frames: list[bytes], ip: str = "") -> None:
        """Handle one request `[type, body]` from routing id `rid` (ip: peer address, for logins).

        Never raises: protocol errors become error replies; a bug becomes E_INTERNAL and a log line.
        """
        req: int | None = None
        try:
            kind, request = wire.decode_request(frames)
            req = request.req
            now = self.clock()
            session = self.sessions.get(rid)
            if session is not None:
                session.last_heard = now
                if kind not in NOT_A_COMMAND:
                    session.last_command = now
            if self.stopping:
                raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the broker is shutting down")
            if kind in NO_SESSION_NEEDED:
                self._no_session_request(rid, kind, request, ip, session)
            elif session is None:
                raise ProtocolError(ErrorCode.NOT_LOGGED_IN, "log in first")
            else:
                self._handlers[kind](session, request)
        except ProtocolError as exc:
            self._err(rid, exc.req if req is None else req, exc.code, exc.message)
        except Exception:  # a bug of ours: answer, log, keep serving
            log.exception("internal error handling a request")
            self._err(rid, req, ErrorCode.INTERNAL, "internal broker error; the request may be retried")

    def _no_session_request(self, rid: bytes, kind: bytes, request: Any, ip: str, session: Session | None) -> None:
        if kind == b"ping":
            self._ok(rid, request.req, {"ts": self.clock(), "session": session is not None})
            return
        if request.version != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.VERSION, f"protocol version {request.version} is not supported; this broker speaks {PROTOCOL_VERSION}"
            )
        if kind == b"hello":
            self._ok(rid, request.req, {
                "version": PROTOCOL_VERSION,
                "broker": "chat-broker",
                "max_message_chars": self.cfg.max_message_chars,
                "min_password_chars": self.cfg.min_password_chars,
            })
        elif kind == b"register":
            self._register(rid, request)
        else:
            if session is not None:
                raise ProtocolError(ErrorCode.ALREADY_LOGGED_IN, f"already logged in as {session.user}; log out first")
            self._login(rid, request, ip)

    def _check_capacity(self, rid: bytes) -> None:
        if rid in self.pending_auth:
            raise ProtocolError(ErrorCode.OVERLOADED, "a login or registration is already in progress on this connection")
        if len(self.pending_auth) >= self.cfg.max_pending_auth:
            raise ProtocolError(ErrorCode.OVERLOADED, "too many logins in progress; retry in a moment")

    def _register(self, rid: bytes, r: m.Register) -> None:
        validate_username(r.user)
        validate_password(r.password, self.cfg.min_password_chars)
        if r.user in self.users or r.user in self.pending_names:
            raise ProtocolError(ErrorCode.USER_EXISTS, f"the name '{r.user}' is taken")
        self._check_capacity(rid)
        self.pending_auth.add(rid)
        self.pending_names.add(r.user)
        self._jobs.append(AuthJob("hash", rid, r.req, r.user, r.password))

    def _login(self, rid: bytes, r: m.Login, ip: str) -> None:
        if r.user not in self.users:
            raise ProtocolError(ErrorCode.UNKNOWN_USER, f"no account named '{r.user}'")
        wait = self.guard.blocked_for(r.user, ip, self.clock())
        if wait > 0:
            log.info("login blocked user=%s ip=%s retry_after=%.0fs", r.user, ip, wait)
            self._err(rid, r.req, ErrorCode.BLOCKED,
                      f"too many wrong passwords: try again in {wait:.0f} s", {"retry_after": round(wait, 1)})
            return
        if len(self.sessions) >= self.cfg.max_clients and r.user not in self.by_user:
            raise ProtocolError(ErrorCode.SERVER_FULL, f"the broker is full ({self.cfg.max_clients} users online)")
        if (r.user, ip) in self.pending_pairs:
            raise ProtocolError(ErrorCode.OVERLOADED, "a login to this account from your address is in progress")
        self._check_capacity(rid)
        row = self.store.get_user(r.user)
        if row is None:  # removed behind our back; treat as unknown
            raise ProtocolError(ErrorCode.UNKNOWN_USER, f"no account named '{r.user}'")
        self.pending_auth.add(rid)
        self.pending_pairs.add((r.user, ip))
        self._jobs.append(AuthJob("verify", rid, r.req, r.user, r.password, row.hash, ip))

    def on_auth_result(self, job: AuthJob) -> None:
        """Finish a login or registration whose argon2id work (job.result) is done."""
        self.pending_auth.discard(job.rid)
        try:
            if job.kind == "hash":
                self._finish_register(job)
            else:
                self.pending_pairs.discard((job.user, job.ip))
                self._finish_login(job)
        except ProtocolError as exc:
            self._err(job.rid, job.req, exc.code, exc.message)
        except Exception:
            log.exception("internal error finishing a login")
            self._err(job.rid, job.req, ErrorCode.INTERNAL, "internal broker error; the request may be retried")

    def _finish_register(self, job: AuthJob) -> None:
        self.pending_names.discard(job.user)
        if self.stopping:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the broker is shutting down")
        if not self.store.add_user(job.user, str(job.result), self.clock(), self.seq):
            raise ProtocolError(ErrorCode.USER_EXISTS, f"the name '{job.user}' is taken")
        self.users.add(job.user)
        log.info("registered user=%s", job.user)
        self._ok(job.rid, job.req, {"user": job.user})

    def _finish_login(self, job: AuthJob) -> None:
        now = self.clock()
        if self.stopping:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the broker is shutting down")
        if not job.result:
            left = self.guard.fail(job.user, job.ip, now)
            log.info("failed login user=%s ip=%s attempts_left=%d", job.user, job.ip, left)
            if left == 0:
                secs = self.cfg.block_seconds
                self._err(job.rid, job.req, ErrorCode.BLOCKED,
                          f"wrong password; too many tries: try again in {secs:.0f} s", {"retry_after": secs})
            else:
                self._err(job.rid, job.req, ErrorCode.BAD_CREDENTIALS,
                          f"wrong password ({left} {'try' if left == 1 else 'tries'} left)", {"attempts_left": left})
            return
        self.guard.succeed(job.user, job.ip)
        if job.rid in self.sessions:
            raise ProtocolError(ErrorCode.ALREADY_LOGGED_IN, "already logged in on this connection")
        old = self.by_user.get(job.user)
        if old is None and len(self.sessions) >= self.cfg.max_clients:
            raise ProtocolError(ErrorCode.SERVER_FULL, f"the broker is full ({self.cfg.max_clients} users online)")
        if old is not None:
            log.info("session replaced user=%s", job.user)
            self._end(old, None, "replaced", "you logged in from another place; this session ends")
        row = self.store.get_user(job.user)
        since = row.last_seq if row else self.seq
        s = Session(job.user, job.rid, job.ip, now, now, now)
        self.sessions[job.rid] = s
        self.by_user[job.user] = s
        log.info("login user=%s ip=%s", job.user, job.ip)
        self._ok(job.rid, job.req, {
            "user": job.user,
            "pub_port": self.pub_port,
            "seq": self.seq,
            "since": min(since, self.seq),
            "since_ts": now,
            "heartbeat_interval": self.cfg.heartbeat_timeout / 3,
            "heartbeat_timeout": self.cfg.heartbeat_timeout,
            "idle_timeout": self.cfg.idle_timeout,
            "max_message_chars": self.cfg.max_message_chars,
        })
        if old is None:
            self._presence(s, "login")
        self._pump(s)

    # -- session end ----------------------------------------------------------------------------
    def _end(self, s: Session, presence: str | None, reason: str | None, message: str = "") -> None:
        """Remove session `s`; record last-seen; tell the client (reason) and everyone (presence)."""
        self.sessions.pop(s.rid, None)
        if self.by_user.get(s.user) is s:
            del self.by_user[s.user]
        self.store.set_last_seen(s.user, self.clock(), s.hidden, s.busy_seq if s.busy else self.seq)
        if reason:
            self._router.append((s.rid, wire.encode_end(reason, message)))
        if presence:
            self._presence(s, presence)

    def _presence(self, s: Session, event: str) -> None:
        if not s.hidden:
            self._publish(m.Event(self.seq + 1, self.clock(), "presence", s.user, event=event))

    def _publish(self, event: m.Event) -> None:
        self.seq = event.seq
        self.store.add_event(event)
        self._pub.append(wire.encode_event(event))

    def on_unreachable(self, rid: bytes) -> None:
        """A ROUTER send to `rid` failed with EHOSTUNREACH: its client is gone; end the session."""
        s = self.sessions.get(rid)
        if s is not None:
            log.info("connection lost user=%s", s.user)
            self._end(s, "lost", None)

    def tick(self) -> None:
        """Periodic work (call about once a second): heartbeat and idle timeouts, lockout purge."""
        now = self.clock()
        hb_cut = now - self.cfg.heartbeat_timeout
        idle_cut = now - self.cfg.idle_timeout
        for s in list(self.sessions.values()):
            if s.last_heard < hb_cut:
                log.info("heartbeat timeout user=%s", s.user)
                self._end(s, "lost", "heartbeat_timeout", "no heartbeat from your client; session ended")
            elif s.last_command < idle_cut:
                log.info("idle timeout user=%s", s.user)
                self._end(s, "timeout", "idle_timeout",
                          f"logged out after {self.cfg.idle_timeout / 60:g} minutes without a command")
        self.guard.purge(now)

    def prune(self) -> None:
        """Trim the event log to --history events and forget old send ids (call now and then)."""
        self.store.prune(self.cfg.history, self.clock() - self.cfg.sends_keep_seconds)

    def shutdown(self) -> None:
        """Tell every client the broker is stopping and record their last-seen times."""
        self.stopping = True
        for s in list(self.sessions.values()):
            self._end(s, None, "shutdown", "the broker is shutting down")

    # -- commands -------------------------------------------------------------------------------
    def _logout(self, s: Session, r: m.Logout) -> None:
        self._ok(s.rid, r.req)
        log.info("logout user=%s", s.user)
        self._end(s, "logout", None)

    def _who(self, s: Session, r: m.Who) -> None:
        names = {o.user for o in self.sessions.values() if not o.hidden}
        names.add(s.user)
        self._ok(s.rid, r.req, {"users": sorted(names)})

    def _last(self, s: Session, r: m.Last) -> None:
        names = {o.user for o in self.sessions.values() if not o.hidden}
        names.update(self.store.seen_since(self.clock() - r.minutes * 60))
        names.add(s.user)
        self._ok(s.rid, r.req, {"users": sorted(names)})

    def _replay(self, s: Session, req: int, cid: str, digest: int) -> None:
        """Answer a retried send id with its first reply, marked dup.

        Raises ProtocolError(E_DUPLICATE_ID) when the id was used for a different message
        (`digest` is content_digest() of the request).
        """
        stored = self.store.get_send(s.user, cid)
        fields = msgspec.json.decode(stored) if stored else {"status": "ok"}
        if fields.pop("digest", digest) != digest:
            raise ProtocolError(ErrorCode.DUPLICATE_ID, f"the send id '{cid}' was already used for another message")
        status = fields.pop("status")
        fields["dup"] = True
        if status == "ok":
            self._ok(s.rid, req, fields)
        else:
            code = ErrorCode(fields.pop("code"))
            self._err(s.rid, req, code, fields.pop("message"), fields)

    def _broadcast(self, s: Session, r: m.Broadcast) -> None:
        validate_text(r.text, self.cfg.max_message_chars)
        digest = content_digest([], r.text)
        event = m.Event(self.seq + 1, self.clock(), "bcast", s.user, text=r.text, cid=r.id)
        fields = {"seq": event.seq, "ts": event.ts}
        if not self.store.claim_send(s.user, r.id, event.ts, wire.encode_json({"status": "ok", "digest": digest, **fields})):
            self._replay(s, r.req, r.id, digest)
            return
        self._publish(event)
        self._ok(s.rid, r.req, {**fields, "dup": False})

    def _send(self, s: Session, r: m.Send) -> None:
        """Store a private message in each known recipient's mailbox; push it to those online.

        The send id is claimed first (one INSERT OR IGNORE): a retry changes nothing and gets the
        first reply. Mail ids are assigned here, increasing, so the reply is known before writing.
        """
        validate_text(r.text, self.cfg.max_message_chars)
        to = list(dict.fromkeys(r.to))
        digest = content_digest(to, r.text)
        unknown = [n for n in to if n not in self.users]
        known = [n for n in to if n in self.users]
        if not known:
            if self.store.get_send(s.user, r.id) is not None:
                self._replay(s, r.req, r.id, digest)
                return
            self._err(s.rid, r.req, ErrorCode.UNKNOWN_USER, f"no such user: {', '.join(unknown)}",
                      {"unknown": unknown, "ids": {}, "busy": [], "dup": False})
            return
        now = self.clock()
        ids = {name: self.last_mail_id + k for k, name in enumerate(known, 1)}
        busy_now = [rs for rs in (self.by_user.get(n) for n in known)
                    if rs is not None and rs.busy and rs is not s and s.user not in rs.auto_replied]
        busy = [{"user": rs.user, "text": rs.busy_text} for rs in busy_now]
        fields: dict[str, Any] = {"ids": ids, "ts": now, "busy": busy}
        if unknown:
            message = f"no such user: {', '.join(unknown)} (sent to {', '.join(known)})"
            record = {"status": "error", "code": ErrorCode.UNKNOWN_USER.value, "message": message,
                      "unknown": unknown, "digest": digest, **fields}
        else:
            record = {"status": "ok", "digest": digest, **fields}
        if not self.store.claim_send(s.user, r.id, now, wire.encode_json(record)):
            self._replay(s, r.req, r.id, digest)
            return
        self.last_mail_id += len(known)
        for rs in busy_now:
            rs.auto_replied.add(s.user)
        for name, mid in ids.items():
            self.store.add_mail(mid, name, s.user, now, r.text, r.id)
            rs = self.by_user.get(name)
            if rs is None:
                continue
            if rs.busy:
                rs.backlog = True
            else:
                self._deliver_new(rs, m.PrivateMessage(mid, s.user, name, now, r.text, r.id))
        if unknown:
            self._err(s.rid, r.req, ErrorCode.UNKNOWN_USER, message, {**fields, "unknown": unknown, "dup": False})
        else:
            self._ok(s.rid, r.req, {**fields, "dup": False})

    def _deliver_new(self, rs: Session, msg: m.PrivateMessage) -> None:
        if rs.backlog or len(rs.inflight) >= self.cfg.mail_window:
            rs.backlog = True
            self._pump(rs)
            return
        rs.inflight.add(msg.id)
        rs.cursor = msg.id
        self._router.append((rs.rid, wire.encode_msg(msg)))

    def _pump(self, s: Session) -> None:
        """Send mailbox messages beyond the session's cursor while the in-flight window has room."""
        if s.busy or not s.backlog:
            return
        room = self.cfg.mail_window - len(s.inflight)
        if room <= 0:
            return
        rows = self.store.mail_after(s.user, s.cursor, room)
        for msg in rows:
            s.inflight.add(msg.id)
            s.cursor = msg.id
            self._router.append((s.rid, wire.encode_msg(msg)))
        if len(rows) < room:
            s.backlog = False

    def _ack(self, s: Session, r: m.Ack) -> None:
        removed = self.store.delete_mail(s.user, r.ids)
        s.inflight.difference_update(r.ids)
        self._ok(s.rid, r.req, {"removed": removed})
        self._pump(s)

    def _busy(self, s: Session, r: m.Busy) -> None:
        if len(r.text) > self.cfg.max_message_chars:
            raise ProtocolError(ErrorCode.MESSAGE_TOO_LONG, f"an auto-reply has at most {self.cfg.max_message_chars} characters")
        if not s.busy:
            s.busy_seq = self.seq
            s.auto_replied = set()
        s.busy = True
        s.busy_text = r.text
        self._ok(s.rid, r.req, {"text": r.text})

    def _idle(self, s: Session, r: m.Idle) -> None:
        held = self.store.count_mail_after(s.user, s.cursor)
        s.busy = False
        s.busy_text = ""
        s.auto_replied = set()
        s.backlog = True
        self._ok(s.rid, r.req, {"held": held})
        self._pump(s)

    def _hide(self, s: Session, r: m.Hide) -> None:
        s.hidden = True
        self._ok(s.rid, r.req)

    def _appear(self, s: Session, r: m.Appear) -> None:
        s.hidden = False
        self._ok(s.rid, r.req)

    def _status(self, s: Session, r: m.Status) -> None:
        self._ok(s.rid, r.req, {"user": s.user, "busy": s.busy, "busy_text": s.busy_text,
                                "hidden": s.hidden, "since_ts": s.since})

    def _history(self, s: Session, r: m.History) -> None:
        limit = min(r.limit, self.cfg.history)
        events = self.store.events_after(r.after, limit) if r.after < self.seq else []
        complete = (not events and r.after >= self.seq) or bool(
            events and events[0].seq == r.after + 1 and events[-1].seq == self.seq
        )
        self._ok(s.rid, r.req, {"events": events, "seq": self.seq, "complete": complete})
