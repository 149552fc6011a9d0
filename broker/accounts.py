"""hello, register, login and logout, and the argon2id results that finish them (docs/protocol.md
sections 5, 6.1, 9.1, 9.2). A mixin of broker.core.BrokerCore; pure (the hashing itself runs in
broker.auth on worker threads).

Limits (docs/security.md): a login or registration waits in a fair per-IP queue for a hashing
thread (broker.authqueue; more than --max-queued-auth-per-ip waiting, or --max-pending-logins in
all, is E_OVERLOADED with retry_after); an IP that sent --max-failed-logins-per-ip wrong passwords
or unknown names in 10 minutes gets E_BLOCKED before any hashing; an IP gets
--max-registrations-per-ip accounts per hour (E_RATE_LIMITED); an account with
--max-login-attempts wrong passwords from anywhere verifies once per --account-verify-interval.

Retries (docs 9.2): a login repeated on a connection that already has the session of that user
with that key gets the first ok reply again (`dup` true) without a second password check; a
register repeated by the same client key within an hour of its success gets ok with `dup` true;
a logout without a session gets ok (`session` false). A register of a name whose registration is
still hashing gets E_OVERLOADED (nothing is committed yet), never E_USER_EXISTS.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from zmq_chat.broker.authjob import AuthJob, claim_name, fetch_send_ids
from zmq_chat.broker.authqueue import AuthQueue
from zmq_chat.broker.connections import Conn
from zmq_chat.broker.corebase import CoreBase
from zmq_chat.broker.feed import OnlineNotice
from zmq_chat.broker.lockout import AccountThrottle, LoginGuard
from zmq_chat.broker.ratelimit import KeyedBuckets
from zmq_chat.broker.session import Session
from zmq_chat.broker.storage import UserRecord
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.errors import ErrorCode, ProtocolError
from zmq_chat.protocol.replies import ErrorReply, HelloReply, LoginReply, LogoutReply, PingReply, RegisterReply
from zmq_chat.protocol.validation import validate_password, validate_username
from zmq_chat.protocol.version import PROTOCOL_VERSION

log = logging.getLogger(__name__)

REGISTER_MEMORY = 3600.0
"""Seconds a successful registration is remembered for answering its retry (docs 9.2)."""
IP_FAILURE_WINDOW = 600.0
"""Seconds over which --max-failed-logins-per-ip wrong passwords are allowed (tokens refill)."""
KNOWN_IPS = 4
"""Addresses remembered per account (its last successful logins, in memory): their logins go first."""
PER_ACCOUNT = 4
"""Logins of one account that may wait for argon2id (those from its known addresses excepted)."""
OVERLOADED_RETRY = 1.0
"""retry_after (seconds) of E_OVERLOADED for a full login queue."""


class Accounts(CoreBase):
    """Account requests; mixed into BrokerCore (the state they use: broker.corebase.CoreBase)."""

    def __init__(self) -> None:
        cfg = self.cfg
        self.pending_auth: set[bytes] = set()  # routing ids with a job queued or running
        self.pending_pairs: set[tuple[str, str]] = set()  # (user, ip) with a verify queued or running
        self.pending_names: set[str] = set()  # names being registered
        self.registered: dict[tuple[str, str], float] = {}  # (client id, name) -> when, for retries
        self.auth_queue = AuthQueue(cfg.max_queued_auth_per_ip)
        self.hashing = 0  # jobs handed to the hashing threads and not answered yet
        self.guard = LoginGuard(cfg.max_login_attempts, cfg.block_seconds)
        self.throttle = AccountThrottle(cfg.max_login_attempts, cfg.account_verify_interval, cfg.block_seconds)
        n = cfg.max_failed_logins_per_ip
        self.ip_failures = KeyedBuckets(n / IP_FAILURE_WINDOW, n)
        r = cfg.max_registrations_per_ip
        self.ip_registrations = KeyedBuckets(r / 3600.0, r)
        self.known_ips: dict[str, list[str]] = {}  # user -> addresses of its last successful logins

    def _no_session_request(self, rid: bytes, kind: bytes, request: Any, ip: str, key: str,
                            fd: int, session: Session | None, conn: Conn | None = None) -> None:
        if kind == b"ping":
            self._ok(rid, PingReply(req=request.req, ts=self.clock(), session=session is not None))
            return
        if kind == b"logout":
            if session is None:
                self._ok(rid, LogoutReply(req=request.req, session=False))
                return
            self._ok(rid, LogoutReply(req=request.req, session=True))
            log.info("logout user=%s", session.user)
            self._end(session, "logout", None)
            return
        if request.version != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.VERSION, f"protocol version {request.version} is not supported; this broker speaks {PROTOCOL_VERSION}"
            )
        if kind == b"hello":
            self._ok(rid, HelloReply(
                req=request.req,
                version=PROTOCOL_VERSION,
                broker="chat-broker",
                max_message_chars=self.cfg.max_message_chars,
                min_password_chars=self.cfg.min_password_chars,
                curve=not self.cfg.insecure,
            ))
        elif kind == b"register":
            self._register(rid, request, ip, key, fd, conn)
        elif session is not None:
            if session.user == request.user:  # a retried login (docs 9.2): same answer again
                self._ok(rid, LoginReply(req=request.req, **session.login, dup=True))
                return
            raise ProtocolError(ErrorCode.ALREADY_LOGGED_IN, f"already logged in as {session.user}; log out first")
        else:
            self._login(rid, request, ip, key, fd, conn)

    def _check_capacity(self, rid: bytes) -> None:
        if rid in self.pending_auth:
            raise ProtocolError(ErrorCode.OVERLOADED, "a login or registration is already in progress on this connection",
                                fields={"retry_after": OVERLOADED_RETRY})
        if len(self.pending_auth) >= self.cfg.max_pending_auth:
            raise ProtocolError(ErrorCode.OVERLOADED, "too many logins in progress; retry in a moment",
                                fields={"retry_after": OVERLOADED_RETRY})

    def _enqueue(self, job: AuthJob) -> None:
        """Queue argon2id work for a free hashing thread. Raises E_OVERLOADED when its IP has
        --max-queued-logins-per-ip jobs waiting, or when PER_ACCOUNT logins of its account wait
        (an account under attack verifies once a second; a login from an address the account
        logged in from before is never refused for that)."""
        if (job.kind == "verify" and self.auth_queue.waiting_for(job.user) >= PER_ACCOUNT
                and job.ip not in self.known_ips.get(job.user, ())):
            raise ProtocolError(ErrorCode.OVERLOADED, "too many logins to this account are waiting; retry in a moment",
                                fields={"retry_after": PER_ACCOUNT * self.cfg.account_verify_interval})
        if not self.auth_queue.add(job, self._rank(job)):
            raise ProtocolError(ErrorCode.OVERLOADED, "too many logins from your address are waiting; retry in a moment",
                                fields={"retry_after": OVERLOADED_RETRY})
        self.pending_auth.add(job.rid)
        if job.kind == "hash":
            self.pending_names.add(job.user)
        else:
            self.pending_pairs.add((job.user, job.ip))

    def _drop_jobs(self, conn: Conn) -> None:
        """Drop the waiting argon2id jobs of connection `conn` (its record, broker.connections.Conn:
        it closed), unrun."""
        for job in self.auth_queue.drop(lambda j: j.conn is not conn):
            log.debug("dropped a login of a closed connection ip=%s", job.ip)
            self._forget_job(job)

    def _forget_job(self, job: AuthJob) -> None:
        self.pending_auth.discard(job.rid)
        if job.kind == "hash":
            self.pending_names.discard(job.user)
        else:
            self.pending_pairs.discard((job.user, job.ip))

    def _dispatch_jobs(self) -> None:
        """Hand queued jobs to free hashing threads (at most --hash-workers at once), fairly
        (broker.authqueue). Jobs of closed connections were dropped unrun (on_disconnected)."""
        if not len(self.auth_queue) or self.hashing >= self.cfg.hash_workers:
            return
        now = self.clock()

        def ready(j: AuthJob) -> bool:
            return j.kind == "hash" or self.throttle.ready_at(j.user, now) <= now

        while self.hashing < self.cfg.hash_workers:
            job = self.auth_queue.pick(ready)
            if job is None:
                return
            self.hashing += 1
            if job.kind == "verify":
                self.throttle.started(job.user, now)
            self._out.jobs.append(job)

    def _rank(self, job: AuthJob) -> int:
        """The queue rank of a job (broker.authqueue): 0 from an address its account logged in from
        before, 2 from an address with recent wrong passwords (or one for this account), else 1."""
        if job.kind == "verify" and job.ip in self.known_ips.get(job.user, ()):
            return 0
        if self.ip_failures.wait(job.ip, self.clock(), 0.999 * self.cfg.max_failed_logins_per_ip) > 0:
            return 2
        return 2 if job.kind == "verify" and self.guard.failures(job.user, job.ip) else 1

    def _purge_guards(self, now: float) -> None:
        """Forget expired lockouts, throttles, full buckets and registrations older than
        REGISTER_MEMORY seconds (call about once a second)."""
        self.guard.purge(now)
        self.throttle.purge(now)
        self.ip_failures.purge(now)
        self.ip_registrations.purge(now)
        self._forget_registrations(now)

    def _client_id(self, rid: bytes, key: str) -> str:
        return key or rid.hex()

    def _register(self, rid: bytes, r: m.Register, ip: str, key: str, fd: int, conn: Conn | None) -> None:
        validate_username(r.user)
        validate_password(r.password, self.cfg.min_password_chars)
        if r.user in self.users:
            if (self._client_id(rid, key), r.user) in self.registered:
                self._ok(rid, RegisterReply(req=r.req, user=r.user, dup=True))
                return
            raise ProtocolError(ErrorCode.USER_EXISTS, f"the name '{r.user}' is taken")
        if r.user in self.pending_names:
            raise ProtocolError(ErrorCode.OVERLOADED, f"a registration of '{r.user}' is in progress; retry in a moment",
                                fields={"retry_after": OVERLOADED_RETRY})
        self._check_capacity(rid)
        wait = self.ip_registrations.take(ip, self.clock())
        if wait > 0:
            raise ProtocolError(ErrorCode.RATE_LIMITED, f"too many new accounts from your address; retry in {wait:.0f} s",
                                fields={"retry_after": round(wait, 1)})
        job = AuthJob("hash", rid, r.req, r.user, r.password, ip=ip, key=key, fd=fd, conn=conn)
        if self.shared:  # other brokers may take the name meanwhile: the hashing thread claims it
            job.record = UserRecord(r.user, "", self.clock(), last_seq=self.seq)
            job.after = functools.partial(claim_name, self.store)
        self._enqueue(job)

    def _login(self, rid: bytes, r: m.Login, ip: str, key: str, fd: int, conn: Conn | None) -> None:
        now = self.clock()
        ip_wait = self.ip_failures.wait(ip, now)
        if ip_wait > 0:
            raise ProtocolError(ErrorCode.BLOCKED, f"too many failed logins from your address: try again in {ip_wait:.0f} s",
                                fields={"retry_after": round(ip_wait, 1)})
        if r.user not in self.users:
            self._ip_failed(ip, now)
            raise ProtocolError(ErrorCode.UNKNOWN_USER, f"no account named '{r.user}'")
        wait = self.guard.blocked_for(r.user, ip, self.clock())
        if wait > 0:
            log.info("login blocked user=%s ip=%s retry_after=%.0fs", r.user, ip, wait)
            self._err(rid, ErrorReply(req=r.req, code=ErrorCode.BLOCKED,
                                      message=f"too many wrong passwords: try again in {wait:.0f} s",
                                      retry_after=round(wait, 1)))
            return
        if len(self.sessions) >= self.cfg.max_clients and r.user not in self.by_user:
            raise ProtocolError(ErrorCode.SERVER_FULL, f"the broker is full ({self.cfg.max_clients} users online)")
        if (r.user, ip) in self.pending_pairs:
            raise ProtocolError(ErrorCode.OVERLOADED, "a login to this account from your address is in progress",
                                fields={"retry_after": OVERLOADED_RETRY})
        self._check_capacity(rid)
        job = AuthJob("verify", rid, r.req, r.user, r.password, self.users[r.user].hash, ip, key, fd, conn=conn)
        if self.shared:  # a client failing over from another broker retries its sends here: know their ids
            job.after = functools.partial(fetch_send_ids, self.store, now - self.cfg.sends_keep_seconds)
        self._enqueue(job)

    def _ip_failed(self, ip: str, now: float) -> None:
        """One failed login (wrong password or unknown name) from `ip`: takes a token of its
        --max-failed-logins-per-ip bucket."""
        if self.ip_failures.take(ip, now) > 0:
            log.info("login blocked ip=%s: too many failed logins", ip)

    def on_auth_result(self, job: AuthJob) -> None:
        """Finish a login or registration whose argon2id work (job.result) is done. Like a request,
        it changes nothing when it fails (store writes and output undone)."""
        self.hashing = max(0, self.hashing - 1)
        self._forget_job(job)
        mark = self._mark()
        try:
            if job.kind == "hash":
                self._finish_register(job)
            else:
                self._finish_login(job)
        except ProtocolError as exc:
            self._undo(mark)
            self._err(job.rid, ErrorReply.of(job.req, exc.code, exc.message, exc.fields))
        except Exception:
            log.exception("internal error finishing a login")
            self._undo(mark)
            self._err(job.rid, ErrorReply.of(job.req, ErrorCode.INTERNAL,
                                             "internal broker error; the request may be retried"))

    def _finish_register(self, job: AuthJob) -> None:
        if self.stopping:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the broker is shutting down")
        if job.record is not None:  # a shared store: the hashing thread claimed the name (claim_user)
            if job.claimed is None:
                raise ProtocolError(ErrorCode.INTERNAL, "the store could not be reached; retry in a moment")
            if not job.claimed:
                raise ProtocolError(ErrorCode.USER_EXISTS, f"the name '{job.user}' is taken")
            self.users[job.user] = job.record  # stored already, with its notice to the other brokers
        else:
            if job.user in self.users:
                raise ProtocolError(ErrorCode.USER_EXISTS, f"the name '{job.user}' is taken")
            record = UserRecord(job.user, str(job.result), self.clock(), last_seq=self.seq)
            self.users[job.user] = record
            self.batch.users.append(record)
            self._req_users.append(job.user)
        self.registered[(self._client_id(job.rid, job.key), job.user)] = self.clock()
        log.info("registered user=%s ip=%s", job.user, job.ip)
        self._ok(job.rid, RegisterReply(req=job.req, user=job.user, dup=False))

    def _finish_login(self, job: AuthJob) -> None:
        """Finish a login whose password check (job.result, bool) is done: a wrong password counts
        against the account and the address; a right one opens the session, ending the user's
        other session (and one of the same client key under another name) first. Raises
        ProtocolError for a broker shutting down, full or already logged in on that connection."""
        now = self.clock()
        if self.stopping:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the broker is shutting down")
        if not job.result:
            self._wrong_password(job, now)
            return
        if job.after is not None and job.sends is None:  # a shared store did not say which sends it has
            raise ProtocolError(ErrorCode.INTERNAL, "the store could not be reached; retry in a moment")
        self.guard.succeed(job.user, job.ip)  # (the account throttle stays: an attack goes on)
        for record in job.sends or ():  # sends stored through another broker: their retries are replays here
            if self.sends.get(record.sender, record.cid) is None:
                self.sends.add(record)
        ips = self.known_ips.setdefault(job.user, [])
        if job.ip not in ips:
            ips.append(job.ip)
            del ips[:-KNOWN_IPS]
        if job.rid in self.sessions:
            raise ProtocolError(ErrorCode.ALREADY_LOGGED_IN, "already logged in on this connection")
        old = self.by_user.get(job.user)
        if old is None and len(self.sessions) >= self.cfg.max_clients:
            raise ProtocolError(ErrorCode.SERVER_FULL, f"the broker is full ({self.cfg.max_clients} users online)")
        if old is not None:
            log.info("session replaced user=%s", job.user)
            self._end(old, None, "replaced", "you logged in from another place; this session ends")
        if job.key and job.key in self.by_key:  # the same client key logged in as someone else
            other = self.by_key[job.key]
            self._end(other, "logout", "replaced", "this client logged in as another user; this session ends")
        s = self._open_session(job, now)
        self._tell_others(OnlineNotice(s.user, self.broker_id, s.since, s.hidden))
        log.info("login user=%s ip=%s", job.user, job.ip)
        self._ok(job.rid, LoginReply(req=job.req, **s.login, dup=False))
        if old is None and job.user not in self.remote:  # (a login replacing one on another broker: no event)
            self._presence(s, "login")
        self._pump(s)

    def _wrong_password(self, job: AuthJob, now: float) -> None:
        """Count a failed password check against the address and the account, and answer
        E_BAD_CREDENTIALS with attempts_left, or E_BLOCKED with retry_after after the last try."""
        self._ip_failed(job.ip, now)
        self.throttle.failed(job.user, now)
        left = self.guard.fail(job.user, job.ip, now)
        log.info("failed login user=%s ip=%s attempts_left=%d", job.user, job.ip, left)
        if left == 0:
            secs = self.cfg.block_seconds
            self._err(job.rid, ErrorReply(req=job.req, code=ErrorCode.BLOCKED,
                                          message=f"wrong password; too many tries: try again in {secs:.0f} s",
                                          retry_after=secs))
        else:
            self._err(job.rid, ErrorReply(req=job.req, code=ErrorCode.BAD_CREDENTIALS,
                                          message=f"wrong password ({left} {'try' if left == 1 else 'tries'} left)",
                                          attempts_left=left))

    def _open_session(self, job: AuthJob, now: float) -> Session:
        """Make and register the session of login `job` (at `now`, seconds), with the fields of
        its ok reply in `login`; detached when its connection closed while hashing."""
        row = self.users.get(job.user)
        since = row.last_seq if row else self.seq
        alive = job.conn is None or self.conns.get(job.fd) is job.conn
        s = Session(job.user, job.rid, job.ip, now, now, now, key=job.key, fd=job.fd if alive else -1,
                    detached=not alive)  # closed while hashing: nothing is pushed until its key is back
        s.login = {
            "user": job.user,
            "pub_port": self.pub_port,
            "seq": self.seq,
            "since": min(since, self.seq),
            "since_ts": now,
            "heartbeat_interval": self.cfg.heartbeat_timeout / 3,
            "heartbeat_timeout": self.cfg.heartbeat_timeout,
            "idle_timeout": self.cfg.idle_timeout,
            "max_message_chars": self.cfg.max_message_chars,
            "pub_heartbeat": self.cfg.pub_heartbeat,
            "epoch": self.epoch,
        }
        self.sessions[job.rid] = s
        self.by_user[job.user] = s
        if job.key:
            self.by_key[job.key] = s
        if alive and job.conn is not None:
            job.conn.bound = True
        return s

    def _forget_registrations(self, now: float) -> None:
        """Drop remembered registrations older than REGISTER_MEMORY seconds."""
        stale = [k for k, when in self.registered.items() if when + REGISTER_MEMORY < now]
        for k in stale:
            del self.registered[k]
