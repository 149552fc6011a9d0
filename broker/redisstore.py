"""The shared store (broker.storage.Store on Redis, `--store redis://HOST:PORT/DB`): several brokers
pointed at one Redis are one chat (docs/scaling.md).

Every commit is ONE EVALSHA of a Lua script (broker.redislua.COMMIT): atomic, and with
`appendfsync always` durable when Redis replies (Redis fsyncs its append-only file before
answering). The script numbers the batch's events with the global counter (the core hands them
over with seq 0), claims send ids against every broker's (a send id found stored is a duplicate:
none of its mail or event is stored, a `dup` notice tells this broker), and appends the notices
the other brokers read back through broker.redisfeed.RedisBackplane in the same transaction: to
zc:feed what every broker keeps (accounts, sessions, last seen), to zc:feed:<id> of the broker a
recipient is in session on its new mail. Mail ids come from a lease taken at load(); what the
others change is read again with refresh(). The keys are listed in broker.redislua.

Threads: commit() runs on the broker's writer thread, claim_user() and sends_of() on a hashing
thread, the reads on the loop thread; redis-py's connection pools make that safe.

Redis going away (kill -9, a restart, its AOF loading): each commit carries a number (1, 2, 3 ...
per store), and the script skips a number zc:applied:<broker_id> holds already, so commit()
retries across the outage (backoff 0.05 s doubling to 1 s, for up to `outage` seconds, then
StoreError) without writing twice when only the reply was lost. Nothing is acknowledged meanwhile:
the writer thread waits and the loop holds the output of the unsettled batches. The reads and
claims fail fast instead (redis.ConnectionError within READ_TIMEOUT seconds; the loop answers
E_INTERNAL, the client retries); all of them work again on redis-py's new connections once Redis
is back, and a script Redis forgot in the restart is loaded again by redis-py (NOSCRIPT).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from zmq_chat.broker import redislua
from zmq_chat.broker.feed import OfflineNotice, OnlineNotice, SeenNotice, UserNotice
from zmq_chat.broker.sendids import MAX_IDS
from zmq_chat.broker.storage import SendRecord, Snapshot, StoreError, UserRecord, WriteBatch
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.limits import MAX_COUNTER

log = logging.getLogger(__name__)

LEASE = 2**40
"""Mail ids one load() leases (Snapshot.last_mail_id < id <= Snapshot.mail_id_limit): 8192 broker
starts before the ids reach protocol.limits.MAX_COUNTER."""

CONNECT_TIMEOUT = 5.0
"""Seconds to connect to Redis before StoreError (opening) or a ConnectionError (later)."""
COMMAND_TIMEOUT = 10.0
"""Seconds a commit or load may take before redis.TimeoutError (a commit then retries: Redis is stuck)."""
READ_TIMEOUT = 2.0
"""Seconds a read or claim may take before redis.TimeoutError (they run on the loop or a hashing
thread, which must not hang on a stuck Redis)."""
OUTAGE = 60.0
"""Seconds commit() retries while Redis is unreachable before StoreError (the broker stops)."""
RETRY_FIRST, RETRY_CAP = 0.05, 1.0
"""Seconds between commit attempts during an outage: the first wait, doubling up to the cap."""
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError)
"""Errors of a Redis that is away (redis.BusyLoadingError, Redis loading its AOF, is a ConnectionError)."""

_json = msgspec.json.Encoder().encode
_pack = msgspec.msgpack.Encoder().encode
_users = msgspec.json.Decoder(UserRecord)
_seen = msgspec.json.Decoder(tuple[float, bool, int])
_online = msgspec.json.Decoder(OnlineNotice)
_message = msgspec.json.Decoder(m.PrivateMessage)


class _Tag(msgspec.Struct):
    """The fields of a logged Event that tie a broadcast to its send id."""

    kind: str = ""
    user: str = ""
    cid: str = ""


_tag = msgspec.json.Decoder(_Tag)


class RedisStore:
    """The broker's persistent state in Redis, shared with other brokers (implements
    broker.storage.Store with shared = True).

    Args:
        url: `redis://[:password@]HOST:PORT/DB` (redis-py's URL forms, also rediss:// and unix://).
        weak_durability: accept a Redis that does not fsync every write (appendonly no,
            appendfsync everysec/no) or may evict keys (maxmemory-policy other than noeviction):
            logs a WARNING naming the weaker promise instead of raising StoreError.
        lease: mail ids leased per load() (LEASE).
        outage: seconds commit() keeps retrying while Redis is unreachable or loading before it
            raises StoreError (default OUTAGE, 60).
        feed_maxlen: entries each feed stream keeps, about (broker.redislua.FEED_MAXLEN; tests
            make a backplane fall behind a short one).
    Attributes: broker_id (uuid4 hex[:12], the origin of this broker's notices), epoch (zc:epoch as
    loaded), url, commits (the number of the newest commit sent).
    Raises StoreError: Redis unreachable, older than 6.2, or not durable (the message names the
    setting to change) without weak_durability; ValueError: a URL redis-py cannot parse.
    """

    shared = True  # several brokers: the store numbers events, the backplane publishes them

    def __init__(self, url: str, *, weak_durability: bool = False, lease: int = LEASE, outage: float = OUTAGE,
                 feed_maxlen: int = redislua.FEED_MAXLEN) -> None:
        self.url = url
        self.feed_maxlen = feed_maxlen
        self.lease = lease
        self.outage = outage
        self.commits = 0
        self.broker_id = uuid.uuid4().hex[:12]
        self.db = client(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=CONNECT_TIMEOUT,
                         socket_timeout=COMMAND_TIMEOUT)  # commits: retried by commit() itself
        # reads and claims (idempotent): one immediate retry on a new connection, none after a timeout
        self.reader = client(url, retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
                             socket_connect_timeout=min(CONNECT_TIMEOUT, READ_TIMEOUT), socket_timeout=READ_TIMEOUT)
        try:
            _check_server(self.db, url, weak_durability)
            self.db.set("zc:epoch", uuid.uuid4().hex, nx=True)
            self.epoch: str = self.db.get("zc:epoch").decode()
        except redis.RedisError as exc:
            self.close()
            raise StoreError(f"cannot use the Redis store at {_safe(url)}: {exc}") from exc
        except StoreError:
            self.close()
            raise
        self._commit = self.db.register_script(redislua.with_feed_maxlen(redislua.COMMIT, feed_maxlen))
        self._load = self.db.register_script(redislua.LOAD)
        self._refresh = self.reader.register_script(redislua.REFRESH)
        self._claim = self.reader.register_script(redislua.with_feed_maxlen(redislua.CLAIM_USER, feed_maxlen))
        self._mail_after = self.reader.register_script(redislua.MAIL_AFTER)
        self._pruning: tuple[int, float] | None = None  # a prune still to finish (writer thread's)
        self._positions: tuple[int, list] | None = None  # (log seq, feed positions) at load()

    # -- start ----------------------------------------------------------------------------------
    def load(self, sends_since: float) -> Snapshot:
        """Everything the core keeps in memory, read in one atomic script, with a fresh lease of
        mail ids. Remembers where the log and the feed streams stood, for backplane(). Raises
        StoreError when the lease would pass protocol.limits.MAX_COUNTER; redis.RedisError on a
        Redis error."""
        out = self._call(self._load, [uuid.uuid4().hex, self.lease, repr(float(sends_since)), MAX_IDS, self.broker_id])
        epoch, state, high, sends_flat, feeds = out
        if high > MAX_COUNTER:
            raise StoreError(f"the mail ids of the Redis store are used up (zc:mailid {high} > {MAX_COUNTER})")
        users, seq, counts, online = self._state(state)
        sends = []
        for i in range(len(sends_flat) - 3, -1, -3):  # newest first in the reply: oldest first here
            sender, _, cid = sends_flat[i].decode().partition("\n")
            sends.append(SendRecord(sender, cid, float(sends_flat[i + 1]), sends_flat[i + 2]))
        self.epoch = epoch.decode()
        self._positions = (seq, feeds)
        return Snapshot(users, seq, high - self.lease, counts, sends, self.epoch, high, online)

    def refresh(self) -> Snapshot:
        """What load() reads of the state every broker changes, read again in one atomic script:
        users (with last_* merged), online (the sessions on other brokers than this one), mail_counts
        and seq; no lease (last_mail_id and mail_id_limit 0) and no send ids. Changes neither the
        epoch nor the positions that commits and the backplane use. The core calls it on its reading
        thread (every minute, and after a broker.feed.FeedLost). Raises StoreError when zc:epoch is
        not this store's; redis.RedisError on a Redis error (quickly while Redis is away)."""
        users, seq, counts, online = self._state(self._call(self._refresh, [self.epoch]))
        return Snapshot(users=users, seq=seq, last_mail_id=0, mail_counts=counts, sends=[], epoch=self.epoch,
                        mail_id_limit=0, online=online)

    def _state(self, state: list) -> tuple[dict[str, UserRecord], int, dict[str, int], dict[str, tuple[str, float, bool]]]:
        """(users with last_* merged, seq, mail counts, sessions on other brokers) of the reply of
        the Lua state() (broker.redislua)."""
        users_flat, seen_flat, seq_text, counts_flat, online_flat = state
        users = {}
        for i in range(1, len(users_flat), 2):
            record = _users.decode(users_flat[i])
            users[record.name] = record
        for i in range(0, len(seen_flat), 2):
            known = users.get(seen_flat[i].decode())
            if known is not None:
                known.last_seen, known.last_seen_hidden, known.last_seq = _seen.decode(seen_flat[i + 1])
        counts = {counts_flat[i].decode(): int(counts_flat[i + 1]) for i in range(0, len(counts_flat), 2)
                  if int(counts_flat[i + 1]) > 0}
        online = {}
        for i in range(1, len(online_flat), 2):
            n = _online.decode(online_flat[i])
            if n.broker != self.broker_id:
                online[n.user] = (n.broker, n.since, n.hidden)
        return users, int(seq_text), counts, online

    def claim_user(self, record: UserRecord) -> bool:
        """Store a new account if the name is free (HSETNX) and tell the other brokers, atomically.
        True: stored (also when this very record was, by a try whose reply was lost); False: the
        name is taken. Raises StoreError when the epoch changed, redis.RedisError on a Redis error
        (quickly while Redis is away: READ_TIMEOUT at most)."""
        body = _json(record)
        notice = _json(UserNotice(record))
        return bool(self._call(self._claim, [self.epoch, self.broker_id, record.name, body, notice]))

    def sends_of(self, sender: str, since: float) -> list[SendRecord]:
        """`sender`'s send ids stored at or after `since` (seconds) by any broker, oldest first: a
        login on this broker learns them (on a hashing thread, not the loop), so the retries of a
        client that failed over from another broker are answered as retries. Two round trips
        (the ids with their replies, then their times). Raises redis.RedisError (quickly while
        Redis is away)."""
        replies = self.reader.hgetall(f"zc:sends:{sender}")
        if not replies:
            return []
        cids = list(replies)
        times = self.reader.zmscore("zc:sendts", [f"{sender}\n".encode() + c for c in cids])
        found = [SendRecord(sender, c.decode(), float(ts), replies[c])
                 for c, ts in zip(cids, times, strict=True) if ts is not None and float(ts) >= since]
        return sorted(found, key=lambda x: x.ts)

    def backplane(self, ttl: float = 10.0) -> Any:
        """This broker's broker.redisfeed.RedisBackplane, reading from where load() left the log
        and the feed streams; ttl: seconds this broker stays alive in Redis without refreshing (the
        others reap its sessions after that). Raises RuntimeError before load()."""
        from zmq_chat.broker.redisfeed import RedisBackplane

        if self._positions is None:
            raise RuntimeError("RedisStore.backplane() needs load() first (the log and feed positions)")
        seq, (feed_id, feed_n, own_id, own_n) = self._positions
        feeds = {"zc:feed": (feed_id, feed_n), f"zc:feed:{self.broker_id}": (own_id, own_n)}
        return RedisBackplane(self.url, self.broker_id, self.epoch, seq, feeds, ttl, feed_maxlen=self.feed_maxlen)

    # -- commit ---------------------------------------------------------------------------------
    def commit(self, batch: WriteBatch) -> set[tuple[str, str]] | None:
        """Apply `batch` in one EVALSHA (see broker.redislua.COMMIT), with a bounded step of a
        pending prune; durable on return under appendfsync always. An empty batch with no prune
        pending is not sent. While Redis is unreachable or loading, the same commit (same number:
        applied at most once) is retried for up to `outage` seconds (a WARNING when that starts, an
        INFO when it ends). Returns the (sender, send id) of the batch's sends found stored already
        by another broker (none of their mail or events was written), or None. Raises StoreError
        when zc:epoch is not this store's (the data was lost or replaced: nothing was written) or
        Redis stayed away `outage` seconds; redis.RedisError for any other Redis error (nothing
        acknowledged either way)."""
        if batch.prune is not None:
            self._pruning = batch.prune
        if not batch and self._pruning is None:
            return None
        self.commits += 1
        more, *dups = self._retrying(self._commit, [self.epoch, self.broker_id, self.commits, _pack(self._encode(batch))])
        if more != 1:  # 0: the prune is done; -1: applied already (the prune goes on at the next one)
            self._pruning = None
        return {(batch.sends[i - 1].sender, batch.sends[i - 1].cid) for i in dups} or None

    def _retrying(self, script: Any, args: list) -> Any:
        """_call(script, args), again and again while Redis is away (_TRANSIENT) or busy with a long
        script (BUSY), for up to self.outage seconds counted from the start of the first failed
        try. Raises StoreError after that; other errors at once."""
        failed_at, wait = 0.0, RETRY_FIRST
        while True:
            started = time.monotonic()
            try:
                out = self._call(script, args)
            except (*_TRANSIENT, redis.ResponseError) as exc:
                if isinstance(exc, redis.ResponseError) and not str(exc).startswith("BUSY "):
                    raise  # (BUSY: a script ran past lua-time-limit, e.g. this commit's try that timed out)
                if not failed_at:
                    failed_at = started
                    log.warning("Redis store %s unreachable (%s); holding commit %d and the replies that wait "
                                "for it, retrying for up to %g s", _safe(self.url), exc, self.commits, self.outage)
                left = failed_at + self.outage - time.monotonic()
                if left <= 0:
                    raise StoreError(f"Redis unreachable for {self.outage:g} s at {_safe(self.url)}: {exc}") from exc
                time.sleep(min(wait, left))
                wait = min(RETRY_CAP, wait * 2)
                continue
            if failed_at:
                log.info("Redis store %s reachable again after %.1f s; commit %d %s", _safe(self.url),
                         time.monotonic() - failed_at, self.commits, "was applied already" if out == -1 else "applied")
            return out

    def _encode(self, batch: WriteBatch) -> list:
        """`batch` as the lists of COMMIT's third argument (strings, numbers; no bytes: Redis's
        cmsgpack reads no binary type)."""
        private: dict[tuple[str, str], int] = {}
        public: dict[tuple[str, str], int] = {}
        sends = []
        for i, x in enumerate(batch.sends, 1):
            (private if x.mail_id else public)[(x.sender, x.cid)] = i
            sends.append((x.sender, x.cid, x.ts, x.reply.decode()))
        mail = [(x.to, str(x.id), _json(x).decode(), private.get((x.sender, x.cid), 0)) for x in batch.mail]
        events = []
        for _, body in batch.events:
            owner = 0
            if public:
                tag = _tag.decode(body)
                owner = public.get((tag.user, tag.cid), 0) if tag.kind == "bcast" else 0
            events.append((bytes(body).decode(), owner))
        acks = [(name, [str(i) for i in ids]) for name, ids in batch.acks if ids]
        seen = [(name, _json((when, hidden, last_seq)).decode(),
                 _json(SeenNotice(name, when, hidden, last_seq)).decode())
                for name, when, hidden, last_seq in batch.last_seen]
        notices = []
        for n in batch.notices:
            if isinstance(n, OnlineNotice):
                notices.append(("online", n.user, n.broker, _json(n).decode()))
            elif isinstance(n, OfflineNotice):
                notices.append(("offline", n.user, n.broker, _json(n).decode()))
            else:
                raise TypeError(f"a WriteBatch notice must be an OnlineNotice or OfflineNotice, not {type(n).__name__}")
        users = [(u.name, _json(u).decode(), _json(UserNotice(u)).decode()) for u in batch.users]
        prune = list(self._pruning) if self._pruning else []
        return [users, sends, mail, events, acks, seen, notices, prune]

    def _call(self, script: Any, args: list) -> Any:
        """Run `script` with ARGV `args`; the script's EPOCH error becomes StoreError."""
        try:
            return script(args=args)
        except redis.ResponseError as exc:
            if str(exc).startswith("EPOCH"):
                raise StoreError(f"Redis store {_safe(self.url)}: {exc}") from exc
            raise

    # -- reads ----------------------------------------------------------------------------------
    def mail_after(self, recipient: str, after_id: int, limit: int) -> list[m.PrivateMessage]:
        """Up to `limit` messages of `recipient`'s mailbox with id > after_id, oldest first (one
        script: ZRANGEBYSCORE and HMGET)."""
        if limit <= 0:
            return []
        rows = self._mail_after(args=[recipient, after_id, limit])
        return [_message.decode(r) for r in rows if r is not None]

    def mail_by_ids(self, recipient: str, ids: list[int]) -> list[m.PrivateMessage]:
        """The messages of `recipient`'s mailbox among `ids` (at most 1000), oldest first (HMGET)."""
        if not ids:
            return []
        wanted = sorted(set(ids))
        rows = self.reader.hmget(f"zc:mail:{recipient}", wanted)
        return [_message.decode(r) for r in rows if r is not None]

    def event_bodies_after(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` logged events with seq > after, oldest first, as (seq, JSON body bytes)
        (XRANGE of zc:log)."""
        if limit <= 0:
            return []
        rows = self.reader.xrange("zc:log", min=f"{after + 1}-0", max="+", count=limit)
        return [(int(entry_id.split(b"-", 1)[0]), fields[b"b"]) for entry_id, fields in rows]

    def close(self) -> None:
        """Close the connections (every batch was committed by commit())."""
        self.db.close()
        self.reader.close()


def client(url: str, **kw: Any) -> Any:
    """redis.Redis.from_url(url, **kw) (raises ValueError for a URL it cannot parse), typed Any:
    redis-py's return types are unions with Awaitable (its asyncio side) that every caller would
    have to narrow."""
    return redis.Redis.from_url(url, **kw)


def _check_server(db: Any, url: str, weak: bool) -> None:
    """Raise StoreError unless Redis at `url` is 6.2 or newer and keeps every acknowledged write:
    appendonly yes, appendfsync always, maxmemory-policy noeviction. With `weak`, log a WARNING
    naming what is weaker instead. Raises redis.RedisError when Redis cannot be reached."""
    version = db.info("server").get("redis_version", "0")
    if tuple(int(p) for p in str(version).split(".")[:2]) < (6, 2):
        raise StoreError(f"Redis at {_safe(url)} is version {version}; the store needs 6.2 or newer")
    try:
        config = {**db.config_get("appendonly"), **db.config_get("appendfsync"), **db.config_get("maxmemory-policy")}
    except redis.ResponseError as exc:  # CONFIG renamed or disabled (managed Redis)
        config = {}
        problems = [f"its settings cannot be read ({exc}); appendonly yes and appendfsync always cannot be checked"]
    else:
        problems = []
    want = {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"}
    for name, value in want.items():
        if config and config.get(name) != value:
            problems.append(f"{name} is {config.get(name)!r}, set `{name} {value}`")
    if not problems:
        return
    text = f"Redis at {_safe(url)} does not keep every acknowledged message: " + "; ".join(problems)
    if not weak:
        raise StoreError(text + " (in redis.conf or with CONFIG SET; or accept weaker durability with --accept-weak-durability)")
    log.warning("%s. Running with WEAKER DURABILITY than promised: an acknowledged message may be lost if Redis "
                "or its machine stops", text)


def _safe(url: str) -> str:
    """`url` without its password (for messages and the log)."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, _ = head.partition("://")
    return f"{scheme}{sep}***@{tail}"
